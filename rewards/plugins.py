"""Adapters from the ecosystem's reward conventions to the batched RewardFn interface.

Detected from the function's signature:
- native: first parameter named `inputs` -> f(list[RewardInput]) -> list[RewardOutput | float]
- verl:   parameters include `solution_str` -> compute_score(data_source, solution_str,
          ground_truth, extra_info=None) -> float | {"score": float, ...extras}
          (data_source = reference["data_source"], ground_truth = reference["answer"],
          extra_info = the reference plus `mode`)
- TRL:    first parameter named `prompts`, `completions` or `completion_ids`, or only **kwargs ->
          f(prompts, completions, completion_ids, **columns) -> list[float | None], as TRL's
          GRPOTrainer calls it: the dataset columns (the reference's keys but `prompt`, plus `mode`) as
          lists, and `log_extra(name, values)` / `log_metric(name, value)`, whose values become the
          samples' extras. With completion_format "messages" a completion is
          [{"role": "assistant", "content": text}] and a prompt its chat messages, as TRL hands them
          for conversational data (trl.rewards' functions read `completion[0]["content"]`); with
          "text" both are strings. A function without **kwargs receives only what it names. (The
          assistant message holds the whole turn: in reasoning mode it starts with the `<think>` that
          the chat template put in the generation prompt, so trl.rewards.think_format_reward sees it.)
          None means "cannot score" -> 0 with an error.
`columns` {parameter: column} hands a plug-in the row's `column` under the name it reads. Plug-ins
receive the raw completion (the ecosystems' convention), not the extracted answer. Coroutine functions
are awaited. Native and TRL rewards are called with a batch, verl ones once per sample (`per_sample`);
RewardPool checks that a batch call returns one value per sample. Values are judged by
rewards.types.score_problem within the reward's `score_range`: a value that breaks it scores 0 with the error.
"""
from __future__ import annotations

import asyncio
import inspect
import threading

from dualmode_rl.constants import REASONING, THINK_OPEN
from dualmode_rl.rewards.types import SCORE_RANGE, RewardInput, RewardOutput, score_problem

COMPLETION_FORMATS = ("text", "messages")
TRL_FIRST_PARAMETERS = ("prompts", "completions", "completion_ids")
NOT_COLUMNS = ("prompt", "completion", "completion_ids")  # TRL passes these under its own names


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


def to_output(value, score_range: tuple[float, float] = SCORE_RANGE) -> RewardOutput:
    """A plug-in's value (a number, None, a dict with `score`, or a RewardOutput) as a RewardOutput."""
    if isinstance(value, RewardOutput):
        return value
    extras = {}
    if isinstance(value, dict):
        if "score" not in value:
            raise ValueError(f"returned a dict without a `score` key (keys: {sorted(value)[:8]})")
        extras = {k: v for k, v in value.items() if k != "score"}
        value = value["score"]
    problem = score_problem(value, score_range)
    return RewardOutput(0.0, problem, extras) if problem else RewardOutput(float(value), None, extras)


def convention(fn) -> str:
    params = list(inspect.signature(fn).parameters.values())
    names = [p.name for p in params]
    if "solution_str" in names:
        return "verl"
    if names and names[0] == "inputs":
        return "native"
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if names and names[0] in TRL_FIRST_PARAMETERS or (
            not positional and any(p.kind is p.VAR_KEYWORD for p in params)):
        return "trl"
    raise TypeError(f"cannot tell the convention of {fn!r}{inspect.signature(fn)}: expected "
                    "native f(inputs), TRL f(completions, **columns) or verl "
                    "compute_score(data_source, solution_str, ground_truth, extra_info=None)")


class PluginReward:
    """What every adapter shares: its name, function, declared score range and column aliases."""

    def __init__(self, name: str, fn, score_range: tuple[float, float] = SCORE_RANGE,
                 columns: dict[str, str] | None = None):
        self.name, self._fn = name, fn
        self.score_range = tuple(score_range)
        self.columns = dict(columns or {})

    def reference(self, item: RewardInput) -> dict:
        """The sample's row, with each alias in `columns` holding its column's value."""
        row = item.reference
        return {**row, **{param: row.get(column) for param, column in self.columns.items()}} if self.columns else row

    def output(self, value) -> RewardOutput:
        return to_output(value, self.score_range)


class NativeReward(PluginReward):
    def __call__(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        if self.columns:
            inputs = [RewardInput(i.completion, i.mode, self.reference(i), i.completion_ids, i.prompt) for i in inputs]
        return [self.output(v) for v in resolve(self._fn(inputs))]


class TRLReward(PluginReward):
    def __init__(self, name: str, fn, score_range: tuple[float, float] = SCORE_RANGE,
                 columns: dict[str, str] | None = None, completion_format: str = "text"):
        super().__init__(name, fn, score_range, columns)
        if completion_format not in COMPLETION_FORMATS:
            raise ValueError(f"completion_format must be one of {COMPLETION_FORMATS}, got {completion_format!r}")
        self.completion_format = completion_format
        params = inspect.signature(fn).parameters.values()
        self._accepts_all = any(p.kind is p.VAR_KEYWORD for p in params)
        self._accepted = {p.name for p in params}

    def __call__(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        rows = [self.reference(item) for item in inputs]
        columns: dict[str, list] = {key: [row.get(key) for row in rows]
                                    for key in dict.fromkeys(k for row in rows for k in row) if key not in NOT_COLUMNS}
        columns["mode"] = [item.mode for item in inputs]  # the sample's mode, whatever the row's column says
        logged = _Logged(len(inputs))
        kwargs = {**columns, **self._texts_or_messages(inputs, rows),
                  "completion_ids": [item.completion_ids for item in inputs],
                  "log_extra": logged.extra, "log_metric": logged.metric}
        if not self._accepts_all:
            kwargs = {k: v for k, v in kwargs.items() if k in self._accepted}
        try:
            values = resolve(self._fn(**kwargs))
        except TypeError as exc:
            if self.completion_format == "text" and "string indices must be integers" in str(exc):
                raise TypeError(f"{exc} (it reads completions as chat messages, as trl.rewards' functions do: "
                                "set completion_format: messages)") from exc
            raise
        outputs = [self.output(v) for v in values]
        for out, extras in zip(outputs, logged.per_sample):
            out.extras.update(extras)
        return outputs

    def _texts_or_messages(self, inputs: list[RewardInput], rows: list[dict]) -> dict[str, list]:
        if self.completion_format == "messages":
            return {"prompts": [item.prompt for item in inputs],
                    "completions": [[{"role": "assistant", "content": assistant_turn(item)}] for item in inputs]}
        return {"prompts": [row.get("prompt") for row in rows], "completions": [item.completion for item in inputs]}


def assistant_turn(item: RewardInput) -> str:
    """The assistant message's content: in reasoning mode the chat template opened the think block in the
    generation prompt, so the turn is `<think>` + newline + the completion; in non-reasoning mode the completion."""
    return f"{THINK_OPEN}\n{item.completion}" if item.mode == REASONING else item.completion


class _Logged:
    """TRL's `log_extra(name, values)` (one value per sample) and `log_metric(name, value)` (one for the
    call), kept as each sample's extras: written by `verify`, numeric ones averaged into the metrics."""

    def __init__(self, count: int):
        self.per_sample: list[dict] = [{} for _ in range(count)]

    def extra(self, name: str, values: list) -> None:
        for extras, value in zip(self.per_sample, values):
            extras[name] = value

    def metric(self, name: str, value: float) -> None:
        for extras in self.per_sample:
            extras[name] = value


class VerlReward(PluginReward):
    per_sample = True  # verl calls compute_score once per completion

    def __call__(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        outputs = []
        for item in inputs:
            ref = self.reference(item)
            value = resolve(self._fn(data_source=ref.get("data_source"), solution_str=item.completion,
                                     ground_truth=ref.get("answer", ref.get("ground_truth")),
                                     extra_info={**ref, "mode": item.mode}))
            outputs.append(self.output(value))
        return outputs


ADAPTERS = {"native": NativeReward, "trl": TRLReward, "verl": VerlReward}


def adapt(name: str, fn, score_range: tuple[float, float] = SCORE_RANGE, columns: dict[str, str] | None = None,
          completion_format: str = "text"):
    kind = convention(fn)
    if kind != "trl" and completion_format != "text":
        raise TypeError(f"completion_format {completion_format!r} applies to TRL-style rewards; "
                        f"{name} follows the {kind} convention")
    extra = {"completion_format": completion_format} if kind == "trl" else {}
    return ADAPTERS[kind](name, fn, score_range, columns, **extra)
