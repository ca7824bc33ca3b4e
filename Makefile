# Every target sets itself up from nothing: a virtualenv in .venv with the
# build and test dependencies, and the extension compiled in place.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCES := $(wildcard tempo/*.pyx tempo/*.pxd tempo/*.pxi tempo/*.h)

.PHONY: demo test test-debug test-sanitize build bench bench-micro clean

demo: build
	$(PY) examples/demo.py

test: build
	$(PY) -m pytest -q

build: tempo/.built

# The suite against a TEMPO_DEBUG build (the arena's invariants asserted),
# made in build/debug so the normal build is left alone.
test-debug: $(VENV)/.ready
	rm -rf build/debug && mkdir -p build/debug
	TEMPO_DEBUG=1 $(PY) setup.py -q build_ext --build-lib build/debug
	cp tempo/*.py tempo/*.pyi tempo/py.typed build/debug/tempo/
	PYTHONPATH=build/debug $(PY) -m pytest -q -p no:cacheprovider tests

# The suite against an AddressSanitizer + UBSan build, made in build/asan so
# the normal build is left alone. (RSS bounds do not hold under ASan, and the
# benchmark smoke test loads numpy/matplotlib, which its preload breaks.)
ASAN_LIB = $(shell gcc -print-file-name=libasan.so)
test-sanitize: $(VENV)/.ready
	rm -rf build/asan && mkdir -p build/asan
	TEMPO_SANITIZE=1 $(PY) setup.py -q build_ext --build-lib build/asan
	cp -r tempo/*.py tempo/*.pyi tempo/py.typed build/asan/tempo/
	LD_PRELOAD=$(ASAN_LIB) ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=build/asan \
	    $(PY) -m pytest -q -p no:cacheprovider tests --ignore tests/test_bench_smoke.py \
	    --deselect tests/test_memory.py::test_byte_traffic_keeps_resident_memory_within_the_bound

# The whole benchmark suite (about 11 minutes; see bench/README.md). The bench
# extra (OpenTelemetry, matplotlib) is installed once, and again when
# pyproject.toml changes; $(VENV)/.bench-ready records it. Results go to
# bench/results/; the charts to docs/performance.png and
# docs/performance-scaling.png.
bench: build
	@if [ ! $(VENV)/.bench-ready -nt pyproject.toml ]; then \
	    echo "installing the bench extra"; \
	    $(PY) -m pip install -q --no-build-isolation -e ".[bench]" && touch $(VENV)/.bench-ready; \
	fi
	$(PY) bench/memfloor.py
	$(PY) bench/compare.py --chart bench/results/latest.png
	cp bench/results/latest.png docs/performance.png
	$(PY) bench/scaling.py --png docs/performance-scaling.png
	$(PY) bench/alloc.py
	$(PY) bench/mallocs.py
	$(PY) bench/report.py

bench-micro: build
	mkdir -p bench/results
	$(PY) -m pytest bench/ --benchmark-enable -q --benchmark-json bench/results/micro.json

$(VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "setuptools>=64" "Cython>=3.1" wheel
	$(PY) -m pip install -q --no-build-isolation -e ".[test,examples]"
	touch $@

# Built aside and renamed into place: a process that has the old module
# loaded keeps its copy instead of seeing the file change under it.
tempo/.built: $(VENV)/.ready $(SOURCES) setup.py
	$(PY) setup.py -q build_ext --build-lib build/lib
	for so in build/lib/tempo/_core*.so; do \
	    cp "$$so" "tempo/.$${so##*/}.tmp" && mv "tempo/.$${so##*/}.tmp" "tempo/$${so##*/}"; \
	done
	touch $@

clean:
	rm -rf build tempo/_core.c tempo/*.so tempo/.built tempo/.built-ft

# --- free-threaded CPython (issue 10) ---------------------------------------
# `make python-ft` builds CPython 3.13 with --disable-gil into a cache outside
# the checkout (~/.cache/tempo/python3.13t, or $TEMPO_PYTHON_FT_PREFIX) if it
# is not there yet, and prints its path as its last line (scripts/python-ft.sh;
# 6 minutes on 2 quiet cores, 26 on a busy machine; once). `make test-ft`
# builds tempo with it, in its own virtualenv (.venv-ft), and runs the whole
# suite there, storms included. Its extension (_core.cpython-313t-*.so) sits
# in tempo/ next to the GIL build's, so each interpreter imports its own.
VENV_FT ?= .venv-ft
PY_FT := $(VENV_FT)/bin/python

.PHONY: python-ft build-ft test-ft

python-ft:
	@bash scripts/python-ft.sh

# --prefer-binary: a package with no wheel for 3.13t yet (hypothesis now
# builds a Rust extension from source) falls back to its last wheel.
$(VENV_FT)/.ready: pyproject.toml scripts/python-ft.sh
	py="$$(bash scripts/python-ft.sh | tail -n 1)" && "$$py" -m venv --clear $(VENV_FT)
	$(PY_FT) -m pip install -q --upgrade pip
	$(PY_FT) -m pip install -q --prefer-binary "setuptools>=64" "Cython>=3.1" wheel "pytest>=7" "pytest-benchmark>=4" "hypothesis>=6"
	touch $@

build-ft: tempo/.built-ft

tempo/.built-ft: $(VENV_FT)/.ready $(SOURCES) setup.py
	$(PY_FT) setup.py -q build_ext --build-lib build/ft
	for so in build/ft/tempo/_core*.so; do \
	    cp "$$so" "tempo/.$${so##*/}.tmp" && mv "tempo/.$${so##*/}.tmp" "tempo/$${so##*/}"; \
	done
	touch $@

test-ft: build-ft
	$(PY_FT) -m pytest -q
# --- end free-threaded CPython ----------------------------------------------
