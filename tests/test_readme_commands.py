"""The README's two commands work on a fresh machine (issue 17, fault 8): the test line installs what
it needs itself (pytest lives in the ``dev`` extra), ``.ci/run`` runs exactly that line, and the install
section says what the pinned torch line gives without a local CPU wheel and how to get the CPU build."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)


def _top_blocks() -> list[str]:
    head = "\n".join((REPO / "README.md").read_text(encoding="utf-8").splitlines()[:30])
    return [body.strip() for _, body in FENCE.findall(head)]


def test_readme_test_line_installs_the_dev_extra_first():
    test_line = next(b for b in _top_blocks() if "pytest" in b).splitlines()[-1].strip()
    install, _, run = test_line.partition("&&")
    assert re.search(r"pip install (-e )?\"?\.\[dev\]\"?", install), test_line
    assert "pytest" in run and "pytest" not in install
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert any(x.startswith("pytest") for x in extras) and any(x.startswith("pytest-xdist") for x in extras)
    ci_lines = [x.strip() for x in (REPO / ".ci" / "run").read_text().splitlines() if x.strip() and not x.startswith("#")]
    assert ci_lines[-1] == test_line  # CI runs exactly the README's test line, last


def test_readme_says_how_to_get_the_cpu_torch_build():
    head = "\n".join((REPO / "README.md").read_text(encoding="utf-8").splitlines()[:30])
    assert "pip install torch==2.13.0" in head
    assert "--index-url https://download.pytorch.org/whl/cpu" in head
    assert "CUDA" in head
