"""The CLI starts without the heavy libraries: `finealign --help`, a verb's --help and the errors that need no
model import neither torch nor FastAPI nor transformers (the start took ~6 s when they did)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "fastapi", "transformers")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["train", "ppo", "--help"], ["sim", "--help"], ["eval-winrate"], ["eval-rm", "--help"], ["eval", "winrate", "--help"],
                                  ["train", "ppo", "--prompts", "p.jsonl", "--out", "o", "--steps", "2",
                                   "--critic-warmup", "3", "--advantage", "gae"]])
def test_cli_start_imports_no_heavy_library(argv):
    code = ("import sys\nfrom finealign.cli.main import main\ncode = main(%r)\n"
            "print('RC', code, 'HEAVY', [m for m in %r if m in sys.modules])" % (argv, HEAVY))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = [x for x in out.stdout.splitlines() if x.startswith("RC ")][-1]
    assert line.endswith("HEAVY []"), (line, out.stderr[-2000:])
    if "--critic-warmup" in argv:  # refused before anything loads
        assert line.startswith("RC 1") and "critic_warmup: 3 warm-up steps" in out.stderr


def test_token_rm_losses_agree():
    from finealign.core.token_rm import LOSSES
    from finealign.train.token_rm_config import LOSSES as CONFIG_LOSSES

    assert CONFIG_LOSSES == LOSSES
