"""Sandboxed HumanEval scoring throughput: the reward's zygote sandbox vs one plain subprocess per
program (fresh interpreter, same rlimits, own session, wall-clock killpg), both with 2 workers.
Last line: JSON with `ratio` (sandbox programs/s over plain programs/s)."""
from __future__ import annotations

import gzip
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dualmode_rl.rewards.code import CodeReward  # noqa: E402
from dualmode_rl.rewards.sandbox import Sandbox  # noqa: E402
from dualmode_rl.rewards.sandbox_jail import SAFE_ENV, Limits  # noqa: E402
from dualmode_rl.rewards.types import RewardInput  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "humaneval" / "HumanEval.jsonl.gz"
WORKERS, TIMEOUT_S = 2, 10.0


def plain_subprocess(program: str, limits: Limits) -> bool:
    def preexec():
        for res, value in ((resource.RLIMIT_AS, limits.memory_bytes), (resource.RLIMIT_CPU, limits.cpu_seconds),
                           (resource.RLIMIT_NPROC, limits.max_processes), (resource.RLIMIT_FSIZE, limits.file_bytes),
                           (resource.RLIMIT_NOFILE, limits.open_files)):
            resource.setrlimit(res, (value, value))

    with tempfile.TemporaryDirectory() as cwd, open(os.path.join(cwd, "out"), "w") as out:
        proc = subprocess.Popen([sys.executable, "-I", "-c", program], cwd=cwd, env=dict(SAFE_ENV),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=preexec)
        try:
            return proc.wait(TIMEOUT_S) == 0
        except subprocess.TimeoutExpired:
            return False
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def main() -> None:
    rows = [json.loads(line) for line in gzip.open(DATA, "rt")]
    limits = Limits(cpu_seconds=int(TIMEOUT_S) + 1)
    inputs = [RewardInput(f"```python\n{r['prompt']}{r['canonical_solution']}```", "non_reasoning",
                          {"test": r["test"], "entry_point": r["entry_point"]}) for r in rows]
    reward = CodeReward(sandbox=Sandbox(num_workers=WORKERS, timeout_s=TIMEOUT_S, limits=limits))
    reward(inputs[:4])  # start the zygotes
    start = time.perf_counter()
    scores = [o.score for o in reward(inputs)]
    sandbox_s = time.perf_counter() - start
    reward.close()

    programs = [f"{r['prompt']}{r['canonical_solution']}\n{r['test']}\ncheck({r['entry_point']})\n" for r in rows]
    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        plain = list(pool.map(lambda p: plain_subprocess(p, limits), programs))
    plain_s = time.perf_counter() - start
    result = {"programs": len(rows), "workers": WORKERS,
              "sandbox_programs_per_s": round(len(rows) / sandbox_s, 1), "sandbox_passed": sum(scores),
              "plain_programs_per_s": round(len(rows) / plain_s, 1), "plain_passed": sum(plain),
              "ratio": round(plain_s / sandbox_s, 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
