"""Code reward: run the program from the answer against the row's tests in the sandbox.

Reference keys: `test` (HumanEval `check(candidate)` code or plain asserts) with `entry_point`
(or None), or `tests`: a list of {"input", "output"} for stdin/stdout programs. Score 1 when
every test passes (binary), `extras["pass_fraction"]` logged.
"""
from __future__ import annotations

import re
from dataclasses import astuple

from dualmode_rl.rewards.format import split_answer
from dualmode_rl.rewards.sandbox import Sandbox, SandboxJob
from dualmode_rl.rewards.types import RewardInput, RewardOutput
from dualmode_rl.rewards.worker_owner import WorkerOwner

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_program(answer: str) -> str:
    """The last ```python fenced block; failing that the last bare ``` block; else the whole answer."""
    blocks = [(lang, body) for lang, body in _FENCE.findall(answer)]
    python_blocks = [body for lang, body in blocks if lang]
    if python_blocks:
        return python_blocks[-1]
    if blocks:
        return blocks[-1][1]
    return answer


def last_fence_end(answer: str) -> int | None:
    """Where the last complete ``` fenced block ends (just after its closing fence), or None."""
    ends = [m.end() for m in _FENCE.finditer(answer)]
    return ends[-1] if ends else None


def jobs_for(program: str, reference: dict) -> list[SandboxJob]:
    if reference.get("test"):
        return [SandboxJob(program=program, test_code=reference["test"],
                           entry_point=reference.get("entry_point") or None)]
    cases = reference.get("tests")
    if isinstance(cases, list) and cases:
        return [SandboxJob(program=program, mode="stdio", stdin=str(case["input"]),
                           expected_stdout=str(case["output"])) for case in cases]
    raise ValueError("code row needs `test` (with `entry_point`) or `tests` [{input, output}]")


class CodeReward(WorkerOwner[Sandbox]):
    name = "code"

    def __init__(self, num_workers: int = 2, timeout_s: float = 10.0, sandbox: Sandbox | None = None):
        super().__init__(Sandbox, dict(num_workers=num_workers, timeout_s=timeout_s), sandbox)

    def __call__(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        outputs: list[RewardOutput | None] = [None] * len(inputs)
        jobs, owners = [], []
        for i, item in enumerate(inputs):
            answer, reason = split_answer(item.completion, item.mode)
            if reason is not None:
                outputs[i] = RewardOutput(score=0.0, extras={"pass_fraction": 0.0}, reason=reason)
                continue
            try:
                row_jobs = jobs_for(extract_program(answer), item.reference)
            except (ValueError, KeyError, TypeError) as exc:  # the row is at fault, not the answer
                outputs[i] = RewardOutput(score=0.0, error=f"bad code reference: {exc}", extras={"pass_fraction": 0.0})
                continue
            jobs += row_jobs
            owners += [i] * len(row_jobs)
        results = self._run_distinct(jobs)
        per_row: dict[int, list] = {}
        for owner, result in zip(owners, results):
            per_row.setdefault(owner, []).append(result)
        for i, row_results in per_row.items():
            outputs[i] = _score(row_results)
        return outputs

    def _run_distinct(self, jobs: list[SandboxJob]) -> list:
        """Each distinct job of a batch runs once (the G samples of a prompt often hold the same program):
        its result serves every identical job."""
        distinct = list(dict.fromkeys(astuple(job) for job in jobs))
        results = dict(zip(distinct, self.workers.run_many([SandboxJob(*key) for key in distinct]))) if jobs else {}
        return [results[astuple(job)] for job in jobs]


def _score(results) -> RewardOutput:
    passed = [p for r in results for p in r.passed]
    failures = [r.error for r in results if r.error]  # the program's: timeouts, crashes, wrong output
    fraction = sum(passed) / len(passed) if passed else 0.0
    all_ok = bool(passed) and all(passed) and not failures
    reason = None if all_ok else (failures[0] if failures else "tests failed")
    return RewardOutput(score=1.0 if all_ok else 0.0, extras={"pass_fraction": fraction, "tests": len(passed)},
                        reason=reason)
