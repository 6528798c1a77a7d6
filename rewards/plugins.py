"""Adapters from the ecosystem's reward conventions to the batched RewardFn interface.

Detected from the function's signature:
- native: first parameter named `inputs` -> f(list[RewardInput]) -> list[RewardOutput | float]
- verl:   parameters include `solution_str` -> compute_score(data_source, solution_str,
          ground_truth, extra_info=None) -> float | {"score": float, ...extras}
          (data_source = reference["data_source"], ground_truth = reference["answer"],
          extra_info = the reference plus `mode`)
- TRL:    first parameter named `completions` or `prompts`, or only **kwargs ->
          f(completions=list[str], **columns) -> list[float | None]; columns are the reference
          keys as lists (plus `mode`); None means "cannot score" -> 0 with an error.
Plug-ins receive the raw completion (the ecosystems' convention), not the extracted answer.
Coroutine functions are awaited. Native and TRL rewards are called with a batch, verl ones once per
sample (`per_sample`); RewardPool checks that a batch call returns one value per sample.
Values are judged by rewards.types.score_problem: a value that breaks it scores 0 with the error.
"""
from __future__ import annotations

import asyncio
import inspect
import threading

from dualmode_rl.rewards.types import RewardInput, RewardOutput, score_problem


def resolve(value):
    """Await `value` if it is awaitable, from any thread."""
    if not inspect.isawaitable(value):
        return value

    async def wait():
        return await value

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("v", asyncio.run(wait())))
    thread.start()
    thread.join()
    return box["v"]


def to_output(value) -> RewardOutput:
    """A plug-in's value (a number, None, a dict with `score`, or a RewardOutput) as a RewardOutput."""
    if isinstance(value, RewardOutput):
        return value
    extras = {}
    if isinstance(value, dict):
        if "score" not in value:
            raise ValueError(f"returned a dict without a `score` key (keys: {sorted(value)[:8]})")
        extras = {k: v for k, v in value.items() if k != "score"}
        value = value["score"]
    problem = score_problem(value)
    return RewardOutput(0.0, problem, extras) if problem else RewardOutput(float(value), None, extras)


def convention(fn) -> str:
    params = list(inspect.signature(fn).parameters.values())
    names = [p.name for p in params]
    if "solution_str" in names:
        return "verl"
    if names and names[0] == "inputs":
        return "native"
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if names and names[0] in ("completions", "prompts") or (
            not positional and any(p.kind is p.VAR_KEYWORD for p in params)):
        return "trl"
    raise TypeError(f"cannot tell the convention of {fn!r}{inspect.signature(fn)}: expected "
                    "native f(inputs), TRL f(completions, **columns) or verl "
                    "compute_score(data_source, solution_str, ground_truth, extra_info=None)")


class NativeReward:
    def __init__(self, name: str, fn):
        self.name, self._fn = name, fn

    def __call__(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        return [to_output(v) for v in resolve(self._fn(inputs))]


class TRLReward:
    def __init__(self, name: str, fn):
        self.name, self._fn = name, fn
        params = inspect.signature(fn).parameters.values()
        self._accepts_all = any(p.kind is p.VAR_KEYWORD for p in params)
        self._accepted = {p.name for p in params}

    def __call__(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        columns: dict[str, list] = {key: [item.reference.get(key) for item in inputs]
                                    for key in {k for item in inputs for k in item.reference}}
        columns["mode"] = [item.mode for item in inputs]  # the sample's mode, whatever the row's column says
        columns.setdefault("prompts", columns.get("prompt", [None] * len(inputs)))
        if not self._accepts_all:
            columns = {k: v for k, v in columns.items() if k in self._accepted}
        values = resolve(self._fn(completions=[item.completion for item in inputs], **columns))
        return [to_output(v) for v in values]


class VerlReward:
    per_sample = True  # verl calls compute_score once per completion

    def __init__(self, name: str, fn):
        self.name, self._fn = name, fn

    def __call__(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        outputs = []
        for item in inputs:
            ref = item.reference
            value = resolve(self._fn(data_source=ref.get("data_source"), solution_str=item.completion,
                                     ground_truth=ref.get("answer", ref.get("ground_truth")),
                                     extra_info={**ref, "mode": item.mode}))
            outputs.append(to_output(value))
        return outputs


ADAPTERS = {"native": NativeReward, "trl": TRLReward, "verl": VerlReward}


def adapt(name: str, fn):
    return ADAPTERS[convention(fn)](name, fn)
