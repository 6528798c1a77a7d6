"""The end-to-end benchmark against TRL runs with tiny settings and ends with its JSON result line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "e2e_vs_trl.py"


@pytest.mark.slow
def test_e2e_benchmark_quick_reports_a_ratio():
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, env=env,
                          timeout=600, cwd=SCRIPT.parents[1])
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ratio"] > 0 and result["dualmode_rl_step_s"] > 0 and result["trl_step_s"] > 0
    for side in ("dualmode-rl", "trl"):  # both sides generated, scored and stepped on the same workload
        assert 0 < result[side]["mean_completion_tokens"] <= result["settings"]["max_new_tokens"]
    assert result["settings"]["completions_per_step"] == 8
    stages = {"time/rollout", "time/reward", "time/reference", "time/learner", "time/weight_sync", "time/rollout_wait"}
    assert set(result["dualmode-rl"]["stages_s"]) == stages  # the measured step used the batch generated ahead
    assert result["dualmode-rl"]["max_staleness_seen"] == 1 == result["settings"]["max_staleness"]
