"""The default reward ("auto"): format gate, then the verifier of the row's `domain`."""
from __future__ import annotations

from dualmode_rl.rewards.code import CodeReward
from dualmode_rl.rewards.format import split_answer
from dualmode_rl.rewards.math import MathReward
from dualmode_rl.rewards.types import RewardInput, RewardOutput


class DomainRouter:
    name = "auto"

    def __init__(self, math: MathReward | None = None, code: CodeReward | None = None):
        self.verifiers = {"math": math or MathReward(), "code": code or CodeReward()}

    def __call__(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        outputs: list[RewardOutput | None] = [None] * len(inputs)
        by_domain: dict[str, list[int]] = {}
        for i, item in enumerate(inputs):
            _, error = split_answer(item.completion, item.mode)
            domain = item.reference.get("domain")
            if error is not None:
                outputs[i] = RewardOutput(0.0, extras={"format": 0.0}, reason=error)
            elif domain not in self.verifiers:
                outputs[i] = RewardOutput(0.0, f"unknown domain {domain!r} (expected one of {sorted(self.verifiers)})")
            else:
                by_domain.setdefault(domain, []).append(i)
        for domain, rows in by_domain.items():
            for i, out in zip(rows, self.verifiers[domain]([inputs[i] for i in rows])):
                out.extras.update(format=1.0, domain=domain)
                outputs[i] = out
        return outputs

    def close(self) -> None:
        for verifier in self.verifiers.values():
            verifier.close()
