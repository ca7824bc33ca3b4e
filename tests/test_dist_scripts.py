"""The checks `make dist` and `make check-release` rely on, on made-up inputs.

`make dist` itself builds and checks the real wheels (docs/releasing.md);
these tests show that its checks fail when they should, without a build.
"""

from __future__ import annotations

import importlib.util
import platform
import shutil
import subprocess
import sysconfig
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
ELF_X86_64 = b"\x7fELF\x02\x01\x01" + bytes(11) + (62).to_bytes(2, "little")
ELF_AARCH64 = b"\x7fELF\x02\x01\x01" + bytes(11) + (183).to_bytes(2, "little")


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def check_dist(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load("check_dist")
    # auditwheel is make dist's tool, not the suite's; its verdict is not
    # what these tests are about.
    monkeypatch.setattr(module, "check_auditwheel", lambda path, tag: [])
    return module


def make_wheel(path: Path, module: str, elf: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        for name in ["tempo/__init__.py", "tempo/py.typed", "tempo/_core.pyi",
                     "tempo_batcher-0.1.0.dist-info/licenses/LICENSE"]:
            wheel.writestr(name, "")
        wheel.writestr(f"tempo/{module}", elf + bytes(64))
    return path


def test_a_wheel_with_the_module_of_its_cpu_passes(check_dist: ModuleType, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "tempo_batcher-0.1.0-cp311-cp311-manylinux_2_28_aarch64.whl",
                       "_core.cpython-311-aarch64-linux-gnu.so", ELF_AARCH64)
    assert check_dist.check_wheel(wheel) == []


def test_an_aarch64_wheel_with_an_x86_64_module_fails(check_dist: ModuleType, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "tempo_batcher-0.1.0-cp311-cp311-manylinux_2_28_aarch64.whl",
                       "_core.cpython-311-x86_64-linux-gnu.so", ELF_X86_64)
    assert check_dist.check_wheel(wheel) == [
        "tempo/_core.cpython-311-x86_64-linux-gnu.so is not named for aarch64",
        "tempo/_core.cpython-311-x86_64-linux-gnu.so is not an aarch64 ELF file",
    ]


def test_a_wheel_that_needs_glibc_2_34_fails(check_dist: ModuleType, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "tempo_batcher-0.1.0-cp311-cp311-manylinux_2_34_x86_64.whl",
                       "_core.cpython-311-x86_64-linux-gnu.so", ELF_X86_64)
    assert check_dist.check_wheel(wheel) == ["needs glibc 2.34, newer than 2.28"]


def test_a_linux_tagged_wheel_fails(check_dist: ModuleType, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "tempo_batcher-0.1.0-cp311-cp311-linux_x86_64.whl",
                       "_core.cpython-311-x86_64-linux-gnu.so", ELF_X86_64)
    assert check_dist.check_wheel(wheel) == ["no manylinux_X_Y_{x86_64,aarch64} tag (one tag, the last in the name)"]


def test_the_aarch64_pyconfig_lines_are_each_once_in_this_interpreters_pyconfig() -> None:
    # build_wheel.py stops when one is missing; this is the interpreter the
    # suite runs on, so a CPython that changed them shows up here first.
    if sysconfig.get_config_var("MULTIARCH") != "x86_64-linux-gnu":
        pytest.skip("the replaced lines are those of an x86_64 pyconfig.h")
    text = Path(sysconfig.get_config_h_filename()).read_text()
    assert {line: text.count(line) for line in load("build_wheel").PYCONFIG_AARCH64} == dict.fromkeys(
        load("build_wheel").PYCONFIG_AARCH64, 1)


def test_the_release_expects_free_threaded_builds_from_3_14_on_both_cpus() -> None:
    expected = load("check_release").expected_identifiers([(3, 13), (3, 14)])
    assert expected == {
        "cp313-manylinux_x86_64", "cp313-manylinux_aarch64",
        "cp314-manylinux_x86_64", "cp314-manylinux_aarch64",
        "cp314t-manylinux_x86_64", "cp314t-manylinux_aarch64",
    }


def test_the_wheel_build_compiles_and_links_with_no_debug_flag_but_g0() -> None:
    # setuptools appends $CFLAGS to the link line after LDSHARED's -s, and a
    # later -g cancels zig's -s: the wheels shipped debug info and build paths.
    cflags = load("build_wheel").release_cflags("-Wsign-compare -DNDEBUG -g -fwrapv -O3 -Wall -ggdb3")
    assert cflags == "-Wsign-compare -DNDEBUG -fwrapv -O3 -Wall -g0"


def compile_module(tmp_path: Path, *flags: str) -> bytes:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler to make an ELF module with")
    (tmp_path / "m.c").write_text("int f(int x) { return x + 1; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", *flags, "-o", str(tmp_path / "m.so"), str(tmp_path / "m.c")],
                   check=True, cwd=tmp_path)
    return (tmp_path / "m.so").read_bytes()


def test_a_stripped_module_passes(check_dist: ModuleType, tmp_path: Path) -> None:
    if platform.machine() != "x86_64":
        pytest.skip("the module is compiled for this CPU, the wheel is tagged x86_64")
    elf = compile_module(tmp_path, "-g0", "-s")
    wheel = make_wheel(tmp_path / "tempo_batcher-0.1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
                       "_core.cpython-311-x86_64-linux-gnu.so", elf)
    assert check_dist.check_wheel(wheel) == []


def test_a_module_with_debug_info_and_symbols_fails(check_dist: ModuleType, tmp_path: Path) -> None:
    if platform.machine() != "x86_64":
        pytest.skip("the module is compiled for this CPU, the wheel is tagged x86_64")
    (tmp_path / "build" / "cross").mkdir(parents=True)
    elf = compile_module(tmp_path / "build" / "cross", "-g")
    wheel = make_wheel(tmp_path / "tempo_batcher-0.1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
                       "_core.cpython-311-x86_64-linux-gnu.so", elf)
    problems = check_dist.check_wheel(wheel)
    module = "tempo/_core.cpython-311-x86_64-linux-gnu.so"
    assert f"{module} is not stripped: it has .debug_info" in problems
    assert f"{module} is not stripped: it has .symtab" in problems
    assert f"{module} holds the build path '/build/cross/'" in problems


def print_pythons(**variables: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("no make")
    out = subprocess.run(["make", "-s", "print-pythons", *(f"{k}={v}" for k, v in variables.items())],
                         cwd=SCRIPTS.parent, check=True, capture_output=True, text=True)
    return out.stdout.split()


def test_make_dist_takes_the_newest_patch_release_of_each_pyenv_cpython(tmp_path: Path) -> None:
    for version in ["3.11.4", "3.11.9", "3.12.9", "3.12.10"]:
        python = tmp_path / "versions" / version / "bin" / f"python{version[:4]}"
        python.parent.mkdir(parents=True)
        python.write_text("#!/bin/sh\n")
        python.chmod(0o755)
    assert print_pythons(PYENV_ROOT=str(tmp_path))[:2] == [
        str(tmp_path / "versions" / "3.11.9" / "bin" / "python3.11"),
        str(tmp_path / "versions" / "3.12.10" / "bin" / "python3.12"),
    ]


def test_make_dist_leaves_out_the_interpreters_that_are_not_there(tmp_path: Path) -> None:
    assert print_pythons(PYTHONS=f"{tmp_path}/python3.11 sh python3.99-absent") == ["sh"]
