"""The README's and docs' runnable examples run, and the README stays short with its two commands on top.

A fenced block whose info string is ``bash test`` is runnable on the tiny model: each page's
blocks run in order, in one fresh temporary folder, with ``smollm2-135m-instruct`` replaced by
``tiny-random`` (fast) and ``finealign`` called as ``python -m finealign.cli.main``. Plain
``bash`` blocks are for the real model or a GPU and are not run here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)


def runnable_blocks(text: str) -> list[str]:
    """The bodies of the ``bash test`` blocks of a Markdown text, in order."""
    return [body for info, body in FENCE.findall(text) if info.strip() == "bash test"]


def test_fence_parser():
    text = "a\n```bash test\necho 1\n```\n```bash\necho 2\n```\n```bash test\necho 3\n```\n"
    assert runnable_blocks(text) == ["echo 1\n", "echo 3\n"]


def test_readme_is_short_and_opens_with_the_two_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 260
    first = text[:3000]
    assert "finealign quickstart" in first
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    blocks = [b.strip() for _, b in FENCE.findall(first)]
    test_cmds = [b for b in blocks if "pytest" in b]
    assert test_cmds, "the README's test command is not near the top"
    # .ci/run runs the README's test command itself
    assert test_cmds[0].splitlines()[-1].strip() in ci


def test_every_docs_link_in_readme_exists():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / target).exists(), target


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p.read_text(encoding="utf-8"))],
                         ids=lambda p: p.name)
def test_runnable_examples(page, tmp_path):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    bindir = tmp_path / "_bin"
    bindir.mkdir()
    shim = bindir / "finealign"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m finealign.cli.main \"$@\"\n")
    shim.chmod(0o755)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["FINEALIGN_REPO"] = str(REPO)
    work = tmp_path / "work"
    work.mkdir()
    for i, block in enumerate(runnable_blocks(page.read_text(encoding="utf-8"))):
        script = block.replace("smollm2-135m-instruct", "tiny-random")
        res = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env,
                             capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"{page.name} block {i + 1} failed:\n{script}\n--- stderr:\n{res.stderr[-3000:]}"
