"""The filter end to end: a real vLLM engine on the tiny bootstrap checkpoint, the built-in rewards."""
from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

import process_scan

from dualmode_rl.filtering.accuracy import run_filter
from dualmode_rl.filtering.journal import ChunkJournal

pytestmark = pytest.mark.slow
SAMPLES = 8
PROMPTS = 24


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    pytest.importorskip("vllm")
    from dualmode_rl.rollout.vllm_engine import VllmEngine
    from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig

    sampling = SamplingConfig(reasoning=ModeSampling(0.6, 0.95, 48), non_reasoning=ModeSampling(0.4, 0.95, 48))
    before = {p.pid for p in process_scan.children()}
    engine = VllmEngine(str(tiny_checkpoint), sampling, max_model_len=256, seed=0)
    # rollout.in_process's default on CPU: the engine core runs in this process, no child is started
    assert {p.pid for p in process_scan.children()} <= before
    yield engine
    engine.shutdown()


def reward_pool(name: str = "auto"):
    from dualmode_rl.rewards.pool import RewardPool
    from dualmode_rl.rewards.registry import load_reward

    return RewardPool([(load_reward(name), 1.0)], num_workers=2, timeout_s=10)


class CountingGenerator:
    """Passes requests to the real engine, remembers them, and fails on call `fail_on_call`."""

    def __init__(self, engine, fail_on_call: int | None = None):
        self.engine, self.fail_on_call, self.calls, self.requested, self.seeds = engine, fail_on_call, 0, [], []

    def generate(self, requests, seed=None):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("stopped by the test")
        self.requested += [r.request_id for r in requests]
        self.seeds.append(seed)
        return self.engine.generate(requests, seed=seed)


def test_real_filter_resumes_and_keeps_exactly_the_not_all_correct(engine, tiny_checkpoint, tmp_path):
    input_files = sorted(p.name for p in (tiny_checkpoint / "data" / "train").iterdir())
    data = load_from_disk(str(tiny_checkpoint / "data"))["train"].select(range(PROMPTS))
    assert {"math", "code"} <= set(data["domain"]) and {"reasoning", "non_reasoning"} <= set(data["mode"])
    rewards = reward_pool()
    try:
        interrupted = CountingGenerator(engine, fail_on_call=3)
        with pytest.raises(KeyboardInterrupt):
            run_filter(interrupted, rewards, data, tmp_path, samples=SAMPLES, chunk_size=8, progress=False)
        assert ChunkJournal(tmp_path).chunks() == [0, 1]
        resumed = CountingGenerator(engine)
        report = run_filter(resumed, rewards, data, tmp_path, samples=SAMPLES, chunk_size=8, progress=False)
    finally:
        rewards.close()
    assert resumed.requested == [str(i) for i in range(16, PROMPTS)]  # finished prompts were not sampled again
    assert interrupted.seeds == [0, 1] and resumed.seeds == [2]  # chunk i is sampled with seed + i
    assert report.resumed_prompts == 16 and report.generated_prompts == 8

    records = list(ChunkJournal(tmp_path).records())
    assert [r.index for r in records] == list(range(PROMPTS))
    assert all(len(r.samples) == SAMPLES and all(s.token_ids for s in r.samples) for r in records)
    rescorer = reward_pool()
    try:  # re-score every recorded sample with fresh reward workers: the journal is auditable
        from dualmode_rl.rewards.types import RewardInput

        inputs = [RewardInput(s.text, data[r.index]["mode"], data[r.index]) for r in records for s in r.samples]
        rescored = [o.score for o in rescorer.score(inputs)]
    finally:
        rescorer.close()
    assert rescored == [s.score for r in records for s in r.samples]
    passes = [sum(score >= 1.0 - 1e-9 for score in rescored[i * SAMPLES:(i + 1) * SAMPLES]) for i in range(PROMPTS)]

    kept = load_from_disk(str(tmp_path / "data"))
    assert kept["id"] == [data[i]["id"] for i in range(PROMPTS) if passes[i] < SAMPLES]  # no all-correct prompt kept
    assert {data[i]["id"] for i in range(PROMPTS) if passes[i] == 0} <= set(kept["id"])  # every 0/8 kept
    assert kept["pass_count"] == [p for p in passes if p < SAMPLES]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["input"] == PROMPTS and sum(sum(h.values()) for h in saved["histogram"].values()) == PROMPTS
    assert saved["kept"] + saved["dropped_all_correct"] == PROMPTS and saved["kept"] == len(kept)
    assert all((tmp_path / name).stat().st_size > 0 for name in saved["plots"])
    assert sorted(p.name for p in (tiny_checkpoint / "data" / "train").iterdir()) == input_files  # input untouched


PASS_OR_EVEN_LENGTH = """
def pass_or_even_length(completions, {column}, **columns):
    return [1.0 if value == {passing!r} else float(len(text) % 2 == 0) for text, value in zip(completions, {column})]
"""


def pass_or_even_length(text: str, value: str, passing: str) -> float:
    """What the plug-in above scores: 1 when the column holds `passing`, else 1 for an even length."""
    return 1.0 if value == passing else float(len(text) % 2 == 0)


def plugin_reward_pool(tmp_path, column: str, passing: str):
    """A reward pool of the TRL-style plug-in PASS_OR_EVEN_LENGTH on `column`, loaded from a file."""
    plugin = tmp_path / f"{column}_reward.py"
    plugin.write_text(PASS_OR_EVEN_LENGTH.format(column=column, passing=passing))
    return reward_pool(f"{plugin}:pass_or_even_length")


def filter_first_prompts(generator, rewards, tiny_checkpoint, out, **options):
    data = load_from_disk(str(tiny_checkpoint / "data"))["train"].select(range(PROMPTS))
    return data, run_filter(generator, rewards, data, out, samples=SAMPLES, chunk_size=PROMPTS, progress=False,
                            **options)


def test_real_filter_drops_prompts_whose_samples_all_pass(engine, tiny_checkpoint, tmp_path):
    """A TRL-style plug-in loaded from a file that reads a dataset column: every math sample passes, so every
    math prompt must go, whatever the tiny model writes; a code sample passes when its length is even, so a
    code prompt stays unless all eight of its samples happen to be even."""
    rewards = plugin_reward_pool(tmp_path, "domain", "math")
    try:
        data, report = filter_first_prompts(engine, rewards, tiny_checkpoint, tmp_path / "out")
    finally:
        rewards.close()
    records = list(ChunkJournal(tmp_path / "out").records())
    for record in records:
        domain = data[record.index]["domain"]
        assert [s.score for s in record.samples] == [pass_or_even_length(s.text, domain, "math")
                                                     for s in record.samples]
    passes = {r.index: r.pass_count(1.0 - 1e-9) for r in records}
    dropped = {data[i]["id"] for i, p in passes.items() if p == SAMPLES}
    kept = load_from_disk(str(tmp_path / "out" / "data"))
    assert {row["id"] for row in data if row["domain"] == "math"} <= dropped
    assert report.dropped_all_correct == len(dropped) and len(kept) > 0
    assert not dropped & set(kept["id"]) and len(kept) + len(dropped) == PROMPTS
    assert report.histogram == {mode: {str(k): sum(1 for i, p in passes.items() if p == k and data[i]["mode"] == mode)
                                       for k in range(SAMPLES + 1)} for mode in report.histogram}


def test_real_joint_filter_keeps_prompts_right_in_one_mode_and_rebalances(engine, tiny_checkpoint, tmp_path):
    """A TRL-style plug-in that passes every reasoning sample and a non-reasoning one when its length is
    even: alone, every reasoning prompt would go; sampled jointly, one stays unless its eight
    non-reasoning samples all happen to be even. A rerun on the journal then rebalances the mix."""
    from dualmode_rl.filtering.decide import keeps
    from dualmode_rl.filtering.rows import other_mode

    rewards = plugin_reward_pool(tmp_path, "mode", "reasoning")
    idle = CountingGenerator(engine)
    try:
        data, report = filter_first_prompts(engine, rewards, tiny_checkpoint, tmp_path / "out", joint=True)
        _, rebalanced = filter_first_prompts(idle, rewards, tiny_checkpoint, tmp_path / "out", joint=True,
                                             rebalance_to=0.5)
    finally:
        rewards.close()
    records = list(ChunkJournal(tmp_path / "out").records())
    for record in records:  # each prompt sampled and scored in both modes
        assert len(record.samples) == len(record.cross_samples) == SAMPLES
        assert all(s.token_ids for s in record.cross_samples)
        for samples, mode in ((record.samples, record.mode), (record.cross_samples, other_mode(record.mode))):
            assert [s.score for s in samples] == [pass_or_even_length(s.text, mode, "reasoning") for s in samples]
    threshold = 1.0 - 1e-9
    expected = [data[r.index]["id"] for r in records if keeps(r, threshold)]
    kept_by_joint = [r for r in records if r.mode == "reasoning" and keeps(r, threshold)]
    assert report.kept == len(expected) and report.kept_by_joint == len(kept_by_joint) > 0
    kept = load_from_disk(str(tmp_path / "out" / "data"))
    assert idle.calls == 0 and rebalanced.kept == len(kept) <= report.kept
    assert set(kept["id"]) <= set(expected) and len(set(kept["id"])) == len(kept)
    mode_of = dict(zip(data["id"], data["mode"]))
    assert list(kept["mode"]) == [mode_of[i] for i in kept["id"]]  # each row keeps its own mode
    assert abs(list(kept["mode"]).count("reasoning") - 0.5 * len(kept)) <= 1
    assert rebalanced.dropped_rebalance == report.kept - rebalanced.kept
