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

# `python -m pytest` (and `python -c` in the tests' subprocesses) put the
# current directory first on sys.path, ahead of PYTHONPATH, and so would load
# the normal build in tempo/: PYTHONSAFEPATH (Python 3.11+) keeps it off, and
# this check fails loudly if the build in $(1) is not the one imported.
loaded-from = $(PY) -c 'import sys, tempo._core as c; \
    sys.exit(None if "/$(1)/" in c.__file__ else "tempo is not loaded from $(1): " + c.__file__)'

# The suite against a TEMPO_DEBUG build (the arena's invariants asserted),
# made in build/debug so the normal build is left alone.
test-debug: $(VENV)/.ready
	rm -rf build/debug && mkdir -p build/debug
	TEMPO_DEBUG=1 $(PY) setup.py -q build_ext --build-lib build/debug
	cp tempo/*.py tempo/*.pyi tempo/py.typed build/debug/tempo/
	PYTHONSAFEPATH=1 PYTHONPATH=build/debug $(call loaded-from,build/debug)
	PYTHONSAFEPATH=1 PYTHONPATH=build/debug $(PY) -m pytest -q -p no:cacheprovider tests

# The suite against an AddressSanitizer + UBSan build, made in build/asan so
# the normal build is left alone. (RSS bounds do not hold under ASan, and the
# benchmark smoke test loads numpy/matplotlib, which its preload breaks.)
ASAN_LIB = $(shell gcc -print-file-name=libasan.so)
test-sanitize: $(VENV)/.ready
	rm -rf build/asan && mkdir -p build/asan
	TEMPO_SANITIZE=1 $(PY) setup.py -q build_ext --build-lib build/asan
	cp -r tempo/*.py tempo/*.pyi tempo/py.typed build/asan/tempo/
	LD_PRELOAD=$(ASAN_LIB) ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONSAFEPATH=1 PYTHONPATH=build/asan \
	    $(call loaded-from,build/asan)
	LD_PRELOAD=$(ASAN_LIB) ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONSAFEPATH=1 PYTHONPATH=build/asan \
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

# --- Proof under load (issue 8) ----------------------------------------------
# test-long: the model-based tests, storms and leak checks with many more
# examples, seeds and iterations (docs/reliability.md has the figures).
# test-versions: the whole suite on each CPython in TEST_VERSIONS that pyenv
# provides, each in its own virtualenv (.venv-pyX.Y, made once, again when
# pyproject.toml changes), built in build/pyX.Y and copied in place beside the
# other versions' modules (each file name carries its ABI tag), so the tests'
# subprocesses load it as they load the default one; test-pyX.Y runs one.
PYENV_ROOT ?= $(HOME)/.pyenv
TEST_VERSIONS ?= 3.10 3.12 3.13
.PHONY: test-long test-versions

test-long: build
	TEMPO_LONG=1 $(PY) -m pytest -q -o faulthandler_timeout=1800 tests/test_model.py tests/test_storms.py tests/test_leaks.py

test-versions: $(addprefix test-py,$(TEST_VERSIONS))

test-py%: $(VENV)/.ready
	@base="$$(ls -d $(PYENV_ROOT)/versions/$*.* 2>/dev/null | sort -V | tail -1)"; \
	if [ -z "$$base" ]; then echo "no CPython $* under $(PYENV_ROOT)/versions" >&2; exit 1; fi; \
	echo "CPython $* from $$base"
	@if [ ! .venv-py$*/.ready -nt pyproject.toml ]; then \
	    set -e; rm -rf .venv-py$*; \
	    "$$(ls -d $(PYENV_ROOT)/versions/$*.* | sort -V | tail -1)/bin/python" -m venv .venv-py$*; \
	    $(PY) -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb")); \
	        p = t["project"]; extra = p.get("optional-dependencies", {}); \
	        print("\n".join(t["build-system"]["requires"] + ["wheel"] + p.get("dependencies", []) \
	                        + extra.get("test", []) + extra.get("examples", [])))' \
	        > .venv-py$*/requirements.txt; \
	    .venv-py$*/bin/python -m pip install -q --upgrade pip; \
	    .venv-py$*/bin/python -m pip install -q --no-compile -r .venv-py$*/requirements.txt; \
	    touch .venv-py$*/.ready; \
	fi
	.venv-py$*/bin/python setup.py -q build_ext --build-lib build/py$*
	for so in build/py$*/tempo/_core*.so; do \
	    cp "$$so" "tempo/.$${so##*/}.tmp" && mv "tempo/.$${so##*/}.tmp" "tempo/$${so##*/}"; \
	done
	.venv-py$*/bin/python -m pytest -q -p no:cacheprovider tests
# --- end of proof under load --------------------------------------------------

$(VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "setuptools>=64" "Cython>=3.0.8" wheel
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
	rm -rf build tempo/_core.c tempo/*.so tempo/.built
