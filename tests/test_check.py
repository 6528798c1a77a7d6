"""`dualmode-rl check`: passes on the demo config with a good model, and names what fails. (A model whose
chat template ignores enable_thinking: tests/test_start_checks.py.)"""
from __future__ import annotations

from pathlib import Path

import pytest

from dualmode_rl.orchestration.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # generates, trains one step
def test_check_passes_on_the_demo_config_and_names_a_reward_that_cannot_be_pickled(tiny_checkpoint, tmp_path, capsys):
    assert main(["check", str(ROOT / "configs" / "demo.yaml"), "--model", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert out.count("[ok] ") == 5 and "[FAILED]" not in out and "check took" in out
    assert "reasoning prompt of row 1: '[|user|]" in out and "<think>\\n\\n</think>\\n\\n'" in out
    assert "max |log importance ratio|" in out and "came back equal" in out

    plugin = tmp_path / "locked.py"
    plugin.write_text("import threading\n\n\nclass Locked:\n    def __init__(self):\n        self.lock = threading.Lock()\n\n"
                      "    def __call__(self, completions, **columns):\n        with self.lock:\n"
                      "            return [1.0 for _ in completions]\n\n\nlocked = Locked()\n")
    rewards = f"rewards.rewards=[{{name: auto}}, {{name: '{plugin}:locked'}}]"
    assert main(["check", str(ROOT / "configs" / "demo.yaml"), "--model", str(tiny_checkpoint), rewards]) == 1
    captured = capsys.readouterr()
    assert f"[FAILED] reward '{plugin}:locked': scores 4 samples and pickles: cannot be pickled, so Ray cannot ship it: " \
           "TypeError: cannot pickle '_thread.lock' object" in captured.out
    assert "[ok] reward 'auto'" in captured.out and "dualmode-rl check: 1 failed: reward" in captured.err
