"""benchmarks/gpu_learner.py runs end to end with --tiny on a CPU where only torch and transformers may be
imported (vLLM, Ray, TRL, PEFT and datasets blocked), and reports both sides."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_learner.py"
BLOCKED = ("vllm", "ray", "trl", "peft", "datasets")


@pytest.mark.slow
def test_gpu_learner_benchmark_tiny_runs_with_torch_and_transformers_only():
    code = (f"import runpy, sys; sys.modules.update(dict.fromkeys({BLOCKED!r})); "
            f"sys.argv = [{str(SCRIPT)!r}, '--tiny']; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["tokens_per_step"] == 8 * 128
    for side in ("dualmode_rl", "plain"):
        assert result[side]["tokens_per_s"] > 0 and 0 < result[side]["mfu"] and len(result[side]["steps_s"]) == 2
    assert result["dualmode_rl"]["strategy"] == "fsdp2 (1 rank)" and result["dualmode_rl"]["layout"] == "packed"
    assert result["ratio"] > 0
