"""Unit tests of the filter's surrounding code (drop rule, report, journal, resume) with a fake
generator and a fake reward; the real engine and rewards are in test_filtering_vllm.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import Dataset, load_dataset, load_from_disk

from dualmode_rl.filtering.accuracy import FilterGeneratorError, run_filter
from dualmode_rl.filtering.decide import RebalanceError, keeps, rebalance
from dualmode_rl.filtering.journal import ChunkJournal, JournalMismatch, PromptRecord, SampleRecord
from dualmode_rl.filtering.rows import FilterDataError, other_mode
from dualmode_rl.rewards.types import RewardOutput
from dualmode_rl.rollout.types import RolloutGroup, Sample

SAMPLES = 4
TIMING_KEYS = {"generation_seconds", "scoring_seconds", "wall_seconds", "journal_generation_seconds",
               "setup_seconds", "finish_seconds",
               "generated_prompts", "resumed_prompts", "dataset_dir", "journal_dir"}


def pass_count_of(index: int) -> int:
    """The fake model solves prompt i in (i * 3) % (SAMPLES + 1) of its samples."""
    return (index * 3) % (SAMPLES + 1)


def cross_pass_count_of(index: int) -> int:
    """In a prompt's other mode (filter.joint) the fake model solves the even prompts always, the odd never."""
    return SAMPLES if index % 2 == 0 else 0


class FakeGenerator:
    """Deterministic samples: 'ok' for a correct one, 'bad' otherwise; counts what it was asked."""

    def __init__(self, fail_on_call: int | None = None, delay_s: float = 0.0, samples: int | None = None):
        self.calls, self.requested, self.seeds, self.modes = 0, [], [], []
        self.fail_on_call, self.delay_s, self.samples = fail_on_call, delay_s, samples

    def generate(self, requests, seed=None):
        self.calls += 1
        self.seeds.append(seed)
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("generator died")
        time.sleep(self.delay_s)
        self.requested += [r.request_id for r in requests]
        self.modes += [r.mode for r in requests]
        groups = []
        for r in requests:
            n = self.samples or r.n
            index, _, cross_mode = r.request_id.partition(":")
            good = cross_pass_count_of(int(index)) if cross_mode else pass_count_of(int(index))
            texts = ["ok" if k < good else "bad" for k in range(n)]
            samples = [Sample([1, 2], [-0.1, -0.2], f"{t}:{r.mode}:{r.prompt}", "stop") for t in texts]
            groups.append(RolloutGroup(r.request_id, r.mode, [0], samples))
        return groups


class FakeRewardPool:
    def __init__(self, delay_s: float = 0.0):
        self.delay_s, self.scored = delay_s, 0

    def score(self, inputs):
        self.scored += len(inputs)
        time.sleep(self.delay_s)
        return [RewardOutput(1.0, None) if i.completion.startswith("ok:") else RewardOutput(0.0, "wrong answer")
                for i in inputs]


def make_rows(n: int) -> list[dict]:
    return [
        {"id": f"r{i}", "domain": "math" if i % 3 else "code", "mode": "reasoning" if i % 2 else "non_reasoning",
         "prompt": f"question {i}", "answer": str(i)}
        for i in range(n)
    ]


def comparable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in TIMING_KEYS}


def read_output(out: Path) -> tuple[list[dict], dict]:
    return load_from_disk(str(out / "data")).to_list(), json.loads((out / "report.json").read_text())


def test_drop_rule_histograms_and_report(tmp_path):
    rows, rewards = make_rows(23), FakeRewardPool()
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "input"))
    input_files = sorted(p.name for p in (tmp_path / "input").iterdir())
    report = run_filter(FakeGenerator(), rewards, load_from_disk(str(tmp_path / "input")), tmp_path / "out",
                        samples=SAMPLES, chunk_size=5, progress=False)
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == input_files  # no cache files in the input
    tmp_path = tmp_path / "out"
    assert {p.name for p in tmp_path.iterdir()} == {"data", "journal", "report.json"} | set(report.plots)
    # identical completions of one prompt are scored once: one or two distinct texts per prompt here
    assert rewards.scored == sum(1 if pass_count_of(i) in (0, SAMPLES) else 2 for i in range(23))
    kept, saved = read_output(tmp_path)
    expected_kept = [r for i, r in enumerate(rows) if pass_count_of(i) < SAMPLES]
    assert [r["id"] for r in kept] == [r["id"] for r in expected_kept]
    assert all(r["pass_count"] == pass_count_of(int(r["id"][1:])) and r["sample_count"] == SAMPLES for r in kept)
    assert any(r["pass_count"] == 0 for r in kept)  # 0/G prompts are kept
    assert saved["input"] == 23 and saved["kept"] == len(expected_kept)
    assert saved["dropped_all_correct"] == 23 - len(expected_kept) > 0
    assert sum(sum(h.values()) for h in saved["histogram"].values()) == 23
    assert set(saved["histogram"]) == {"reasoning", "non_reasoning"}
    assert set(saved["histogram"]["reasoning"]) == {str(k) for k in range(SAMPLES + 1)}
    cells = [c for domains in saved["by_mode_domain"].values() for c in domains.values()]
    assert sum(c["input"] for c in cells) == 23 and sum(c["kept"] for c in cells) == saved["kept"]
    for mode, hist in saved["histogram"].items():
        for k, count in hist.items():
            assert count == sum(c["histogram"][k] for c in saved["by_mode_domain"][mode].values())
    assert saved["generated_prompts"] == 23 and saved["resumed_prompts"] == 0
    wrong = sum(SAMPLES - pass_count_of(i) for i in range(23))
    assert saved["reward_errors"] == wrong and saved["reward_error_kinds"] == {"wrong answer": wrong}
    assert {"generation_seconds", "wall_seconds"} <= set(saved) and report.kept == saved["kept"]
    assert sorted(saved["plots"]) == sorted(p.name for p in tmp_path.glob("*.png")) and len(saved["plots"]) == 5
    assert "mix.png" in saved["plots"] and not saved["joint"] and saved["rebalance_share"] is None
    assert saved["dropped_rebalance"] == 0 and saved["kept_share"] == saved["filtered_share"]
    kept_modes = [r["mode"] for r in kept]
    assert saved["kept_share"] == {m: kept_modes.count(m) / len(kept) for m in ("non_reasoning", "reasoning")}
    assert sum(c["kept_share"] for c in cells) == pytest.approx(1.0)  # float sum of exact ratios: 1 ulp per add
    records = list(ChunkJournal(tmp_path).records())
    assert [r.index for r in records] == list(range(23))
    assert [s.score for s in records[7].samples] == [1.0] * pass_count_of(7) + [0.0] * (SAMPLES - pass_count_of(7))
    assert records[7].samples[0].token_ids == [1, 2] and records[7].samples[0].text.endswith("question 7")


def test_interrupted_run_resumes_without_regenerating(tmp_path):
    dataset = Dataset.from_list(make_rows(20))
    run_filter(FakeGenerator(), FakeRewardPool(), dataset, tmp_path / "straight", samples=SAMPLES, chunk_size=4,
               progress=False)
    broken = FakeGenerator(fail_on_call=3)
    with pytest.raises(RuntimeError, match="generator died"):
        run_filter(broken, FakeRewardPool(), dataset, tmp_path / "resumed", samples=SAMPLES, chunk_size=4,
                   progress=False)
    assert ChunkJournal(tmp_path / "resumed").chunks() == [0, 1]  # chunk 1 was journaled despite the failure
    assert not (tmp_path / "resumed" / "report.json").exists()
    again = FakeGenerator()
    report = run_filter(again, FakeRewardPool(), dataset, tmp_path / "resumed", samples=SAMPLES, chunk_size=4,
                        progress=False)
    assert again.requested == [str(i) for i in range(8, 20)]
    assert again.seeds == [2, 3, 4]  # chunk i sampled with seed 0 + i, as in the uninterrupted run
    assert report.resumed_prompts == 8 and report.generated_prompts == 12
    rows_a, report_a = read_output(tmp_path / "straight")
    rows_b, report_b = read_output(tmp_path / "resumed")
    assert rows_a == rows_b and comparable(report_a) == comparable(report_b)


def test_rerun_after_finish_generates_nothing_and_threshold_reuses_journal(tmp_path):
    dataset = Dataset.from_list(make_rows(10))
    run_filter(FakeGenerator(), FakeRewardPool(), dataset, tmp_path, samples=SAMPLES, chunk_size=4, progress=False)
    first = read_output(tmp_path)
    idle = FakeGenerator()
    run_filter(idle, FakeRewardPool(), dataset, tmp_path, samples=SAMPLES, chunk_size=4, progress=False)
    assert idle.calls == 0 and comparable(read_output(tmp_path)[1]) == comparable(first[1])
    report = run_filter(idle, FakeRewardPool(), dataset, tmp_path, samples=SAMPLES, chunk_size=4, progress=False,
                        correct_threshold=2.0)  # nothing counts as correct now: everything is kept
    assert idle.calls == 0 and report.kept == 10 and report.dropped_all_correct == 0


def test_other_inputs_are_refused_by_the_journal(tmp_path):
    dataset = Dataset.from_list(make_rows(6))
    key = {"model": Path("/m"), "sampling": (0.6, 0.95)}
    run_filter(FakeGenerator(), FakeRewardPool(), dataset, tmp_path, samples=SAMPLES, chunk_size=4, progress=False,
               run_key=key)
    idle = FakeGenerator()
    run_filter(idle, FakeRewardPool(), dataset, tmp_path, samples=SAMPLES, chunk_size=4, progress=False, run_key=key)
    assert idle.calls == 0
    with pytest.raises(JournalMismatch, match="run_key"):
        run_filter(FakeGenerator(), FakeRewardPool(), dataset, tmp_path, samples=SAMPLES, chunk_size=4,
                   progress=False, run_key=dict(key, model="/other"))
    with pytest.raises(JournalMismatch, match="samples"):
        run_filter(FakeGenerator(), FakeRewardPool(), dataset, tmp_path, samples=2, chunk_size=4, progress=False,
                   run_key=key)
    changed = Dataset.from_list(make_rows(5) + [dict(make_rows(6)[5], answer="other")])
    with pytest.raises(JournalMismatch, match="dataset"):
        run_filter(FakeGenerator(), FakeRewardPool(), changed, tmp_path, samples=SAMPLES, chunk_size=4, progress=False,
                   run_key=key)


def test_bad_rows_name_file_and_row(tmp_path):
    rows = make_rows(5)
    rows[3]["mode"] = "thinking"
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = load_dataset("json", data_files=str(path), split="train")
    with pytest.raises(FilterDataError, match=r"row 4: 'mode' is 'thinking'"):
        run_filter(FakeGenerator(), FakeRewardPool(), dataset, tmp_path / "out", source=str(path), progress=False)
    with pytest.raises(FilterDataError, match="prompts.jsonl: row 4"):
        run_filter(FakeGenerator(), FakeRewardPool(), dataset, tmp_path / "out", source=str(path), progress=False)
    no_prompt = Dataset.from_list([{"mode": "reasoning", "question": "x"}])
    with pytest.raises(FilterDataError, match=r"missing column\(s\) \['prompt'\]"):
        run_filter(FakeGenerator(), FakeRewardPool(), no_prompt, tmp_path / "out2", progress=False)
    empty_prompt = Dataset.from_list(make_rows(2) + [dict(make_rows(3)[2], prompt=" ")])
    with pytest.raises(FilterDataError, match="row 3: 'prompt' must be a non-empty string"):
        run_filter(FakeGenerator(), FakeRewardPool(), empty_prompt, tmp_path / "out3", progress=False)


def test_generator_without_seed_parameter_is_accepted(tmp_path):
    class Unseeded:
        def __init__(self):
            self.inner = FakeGenerator()

        def generate(self, requests):
            return self.inner.generate(requests)

    generator = Unseeded()
    report = run_filter(generator, FakeRewardPool(), Dataset.from_list(make_rows(6)), tmp_path, samples=SAMPLES,
                        chunk_size=4, progress=False)
    assert report.input == 6 and generator.inner.seeds == [None, None]


def test_generator_with_wrong_sample_count_is_an_error(tmp_path):
    with pytest.raises(FilterGeneratorError, match="3 samples, expected 4"):
        run_filter(FakeGenerator(samples=3), FakeRewardPool(), Dataset.from_list(make_rows(3)), tmp_path,
                   samples=SAMPLES, progress=False)


class TimedGenerator(FakeGenerator):
    def __init__(self, delay_s: float):
        super().__init__(delay_s=delay_s)
        self.spans = []

    def generate(self, requests, seed=None):
        began = time.monotonic()
        groups = super().generate(requests, seed)
        self.spans.append((began, time.monotonic()))
        return groups


class TimedRewardPool(FakeRewardPool):
    def __init__(self, delay_s: float):
        super().__init__(delay_s=delay_s)
        self.spans = []

    def score(self, inputs):
        began = time.monotonic()
        outputs = super().score(inputs)
        self.spans.append((began, time.monotonic()))
        return outputs


def test_scoring_overlaps_generation(tmp_path):
    generator, rewards = TimedGenerator(0.3), TimedRewardPool(0.3)
    report = run_filter(generator, rewards, Dataset.from_list(make_rows(20)), tmp_path, samples=SAMPLES, chunk_size=5,
                        progress=False)
    assert len(generator.spans) == len(rewards.spans) == 4
    for (score_start, score_end), (gen_start, gen_end) in zip(rewards.spans, generator.spans[1:]):
        assert score_start < gen_end and gen_start < score_end  # chunk i scored while chunk i+1 is generated
    assert report.generation_seconds >= 1.2 and report.scoring_seconds >= 1.2


KILLED_RUN = """
import sys
sys.path.insert(0, {tests!r})
from datasets import Dataset
from dualmode_rl.filtering.accuracy import run_filter
from test_filtering_unit import FakeGenerator, FakeRewardPool, make_rows, SAMPLES
if __name__ == "__main__":
    run_filter(FakeGenerator(delay_s=0.5), FakeRewardPool(), Dataset.from_list(make_rows(20)), {out!r},
               samples=SAMPLES, chunk_size=4, progress=False)
"""


def test_killed_process_resumes_to_identical_output(tmp_path):
    out = tmp_path / "killed"
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[1], start_new_session=True)
    shard = out / "journal" / "chunk-000000.jsonl"
    deadline = time.monotonic() + 60
    while not shard.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert shard.exists(), "the child never journaled its first chunk"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = ChunkJournal(out).chunks()
    assert 0 < len(done) < 5 and not (out / "report.json").exists()
    dataset = Dataset.from_list(make_rows(20))
    again = FakeGenerator()
    run_filter(again, FakeRewardPool(), dataset, out, samples=SAMPLES, chunk_size=4, progress=False)
    assert again.requested == [str(i) for i in range(4 * len(done), 20)]
    run_filter(FakeGenerator(), FakeRewardPool(), dataset, tmp_path / "straight", samples=SAMPLES, chunk_size=4,
               progress=False)
    rows_a, report_a = read_output(tmp_path / "straight")
    rows_b, report_b = read_output(out)
    assert rows_a == rows_b and comparable(report_a) == comparable(report_b)


class ConstantReward:
    def __init__(self, name: str, value: float):
        self.name, self.value = name, value

    def __call__(self, inputs):
        return [RewardOutput(self.value) for _ in inputs]


def test_dualmode_rl_filter_counts_answers_not_shaping_terms():
    """auto + arithmetic_steps: a wrong answer with sound steps totals 1.0, which alone would count as
    correct; `dualmode-rl filter` scores the accuracy reward (eval.reward) alone."""
    from dualmode_rl.orchestration.prefilter import AccuracyScores
    from dualmode_rl.rewards.pool import RewardPool
    from dualmode_rl.rewards.types import RewardInput

    pool = RewardPool([(ConstantReward("auto", 0.0), 1.0), (ConstantReward("arithmetic_steps", 1.0), 1.0)])
    inputs = [RewardInput("4+1=5\n</think>\n\nThe answer is \\boxed{6}.", "reasoning", {})]
    assert pool.score(inputs)[0].score == 1.0
    assert AccuracyScores(pool, "auto").score(inputs)[0].score == 0.0
    assert AccuracyScores(pool, "not_in_pool").score(inputs)[0].score == 1.0  # no such component: the total


@pytest.mark.parametrize("reasoning,others,share", [
    (30, 10, 0.5), (10, 30, 0.5), (7, 50, 0.3), (50, 7, 0.3), (41, 13, 0.62), (3, 1000, 0.9), (12, 12, 0.5),
    (9, 4, 0.0), (9, 4, 1.0), (0, 5, 0.0), (1, 1, 0.01),
])
def test_rebalance_hits_the_target_share_within_one_prompt(reasoning, others, share):
    modes = ["reasoning"] * reasoning + ["non_reasoning"] * others
    modes = [modes[(i * 7) % len(modes)] for i in range(len(modes))] if len(modes) % 7 else modes  # interleaved
    kept = rebalance(modes, share, seed=3)
    kept_reasoning = sum(modes[i] == "reasoning" for i in kept)
    assert abs(kept_reasoning - share * len(kept)) <= 1
    assert kept == sorted(set(kept)) and set(kept) <= set(range(len(modes)))  # a subset, in order, no duplicates
    over = "reasoning" if kept_reasoning / max(1, len(kept)) < reasoning / len(modes) else "non_reasoning"
    assert {i for i, m in enumerate(modes) if m != over} <= set(kept)  # only the over-represented mode loses rows
    assert rebalance(modes, share, seed=3) == kept  # deterministic with the seed


def test_rebalance_draws_the_dropped_rows_with_the_seed():
    modes = ["reasoning"] * 60 + ["non_reasoning"] * 20
    assert rebalance(modes, 0.5, seed=0) != rebalance(modes, 0.5, seed=1)
    assert len(rebalance(modes, 0.5, seed=0)) == len(rebalance(modes, 0.5, seed=1)) == 40


def test_rebalance_that_would_drop_every_prompt_is_an_error():
    with pytest.raises(RebalanceError, match=r"filter.rebalance: the filter kept 0 reasoning and 5 non-reasoning"):
        rebalance(["non_reasoning"] * 5, 0.5, seed=0)
    assert rebalance([], 0.5, seed=0) == []


def scored_record(pool, row: dict, own: list[str], other: list[str]) -> PromptRecord:
    """A prompt record scored by the real math reward: `own` in the row's mode, `other` in the other mode."""
    from dualmode_rl.rewards.types import RewardInput

    cross = other_mode(row["mode"])
    outputs = pool.score([RewardInput(t, row["mode"], row) for t in own] + [RewardInput(t, cross, row) for t in other])
    records = [SampleRecord(t, [], "stop", o.score, o.error) for t, o in zip(own + other, outputs)]
    return PromptRecord(0, "p", row["mode"], "math", records[:len(own)], records[len(own):])


def test_joint_drop_rule_on_real_math_scores():
    """With joint sampling a prompt is dropped only when all its samples are right in both modes."""
    from dualmode_rl.rewards.pool import RewardPool
    from dualmode_rl.rewards.registry import load_reward

    row = {"mode": "reasoning", "domain": "math", "prompt": "2+3?", "answer": "5"}
    right, wrong = "2+3=5\n</think>\n\nThe answer is \\boxed{5}.", "2+3=6\n</think>\n\nThe answer is \\boxed{6}."
    right_direct, wrong_direct = "The answer is \\boxed{5}.", "The answer is \\boxed{6}."
    pool = RewardPool([(load_reward("math"), 1.0)], num_workers=1)
    try:
        both = scored_record(pool, row, [right] * 3, [right_direct] * 3)
        own_only = scored_record(pool, row, [right] * 3, [right_direct, wrong_direct, right_direct])
        other_only = scored_record(pool, row, [right, wrong, right], [right_direct] * 3)
        # an unclosed think block scores 0 in reasoning mode; the same text answers in non-reasoning mode
        direct_only = scored_record(pool, row, [right_direct] * 3, [right_direct] * 3)
    finally:
        pool.close()
    assert [s.score for s in own_only.samples + own_only.cross_samples] == [1.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert [s.score for s in direct_only.samples + direct_only.cross_samples] == [0.0] * 3 + [1.0] * 3
    threshold = 1.0 - 1e-9
    assert not keeps(both, threshold) and keeps(own_only, threshold) and keeps(other_only, threshold)
    assert keeps(direct_only, threshold)
    own_only.cross_samples = []  # the same prompt, sampled in its own mode alone, is dropped
    assert not keeps(own_only, threshold)


def mixed_rows(n: int) -> list[dict]:
    """Rows i with i % 5 in (0, 3) are non-reasoning: the fake model always solves i % 5 == 3, so the
    filter drops only non-reasoning prompts and the reasoning share rises from 0.6."""
    return [dict(row, mode="non_reasoning" if i % 5 in (0, 3) else "reasoning") for i, row in enumerate(make_rows(n))]


def test_rebalance_restores_the_mix_after_filtering(tmp_path):
    out = tmp_path / "filter"
    dataset = Dataset.from_list(mixed_rows(40))
    report = run_filter(FakeGenerator(), FakeRewardPool(), dataset, out, samples=SAMPLES, chunk_size=16,
                        progress=False, rebalance_to="input", seed=5)
    kept, saved = read_output(out)
    modes = [r["mode"] for r in kept]
    assert saved["input_share"] == {"non_reasoning": 0.4, "reasoning": 0.6}
    assert saved["filtered_share"] == {"non_reasoning": 8 / 32, "reasoning": 24 / 32}
    assert abs(modes.count("reasoning") - 0.6 * len(kept)) <= 1 and saved["rebalance_share"] == 0.6
    assert saved["kept_share"] == {m: modes.count(m) / len(kept) for m in ("non_reasoning", "reasoning")}
    assert [r["id"] for r in kept if r["mode"] == "non_reasoning"] == [f"r{i}" for i in range(0, 40, 5)]
    assert saved["input"] == saved["kept"] + saved["dropped_all_correct"] + saved["dropped_rebalance"]
    assert (saved["kept"], saved["dropped_all_correct"], saved["dropped_rebalance"]) == (20, 8, 12)
    cells = [c for domains in saved["by_mode_domain"].values() for c in domains.values()]
    assert sum(c["dropped_rebalance"] for c in cells) == 12 and sum(c["kept"] for c in cells) == 20
    assert sum(c["dropped_rebalance"] for c in saved["by_mode_domain"]["non_reasoning"].values()) == 0
    assert "mix.png" in report.plots and (out / "mix.png").stat().st_size > 0
    run = tmp_path / "train"  # `dualmode-rl report` finds the filter's report in ../filter
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "reasoning/reward": 0.5}) + "\n")
    from dualmode_rl.orchestration.report import write_report

    text = write_report(run).read_text()
    assert "kept share: non_reasoning 0.400, reasoning 0.600" in text
    assert "rebalanced to a reasoning share of 0.600, dropping 12" in text and "![mix.png]" in text
    idle = FakeGenerator()  # rebalancing only decides: a rerun to another share reuses the journal
    again = run_filter(idle, FakeRewardPool(), dataset, out, samples=SAMPLES, chunk_size=16, progress=False,
                       rebalance_to=0.5, seed=5)
    assert idle.calls == 0 and again.kept == 16 and again.kept_share == {"non_reasoning": 0.5, "reasoning": 0.5}
    run_filter(idle, FakeRewardPool(), dataset, out, samples=SAMPLES, chunk_size=16, progress=False,
               rebalance_to="input", seed=5)
    assert read_output(out)[0] == kept  # the same seed draws the same rows


def test_joint_sampling_keeps_a_prompt_right_in_one_mode_only(tmp_path):
    rows = make_rows(20)
    generator = FakeGenerator()
    report = run_filter(generator, FakeRewardPool(), Dataset.from_list(rows), tmp_path, samples=SAMPLES, chunk_size=8,
                        progress=False, joint=True)
    assert generator.requested[:4] == ["0", "0:reasoning", "1", "1:non_reasoning"]
    assert generator.modes[:4] == ["non_reasoning", "reasoning", "reasoning", "non_reasoning"]
    records = list(ChunkJournal(tmp_path).records())
    assert all(len(r.cross_samples) == SAMPLES for r in records)
    assert all(f":{other_mode(r.mode)}:" in s.text for r in records for s in r.cross_samples)  # in the other mode
    all_right_own = [i for i in range(20) if pass_count_of(i) == SAMPLES]
    assert all_right_own == [3, 8, 13, 18]  # 3 and 13 are right in their other mode only some of the time
    kept, saved = read_output(tmp_path)
    assert [r["id"] for r in kept] == [f"r{i}" for i in range(20) if i not in (8, 18)]
    assert [r["mode"] for r in kept] == [r["mode"] for i, r in enumerate(rows) if i not in (8, 18)]  # own mode kept
    assert report.joint and report.kept_by_joint == 2 and report.dropped_all_correct == 2 and report.kept == 18
    assert saved["histogram"]["reasoning"][str(SAMPLES)] == 2  # pass counts are in the row's own mode
    with pytest.raises(JournalMismatch, match="joint"):
        run_filter(FakeGenerator(), FakeRewardPool(), Dataset.from_list(rows), tmp_path, samples=SAMPLES, chunk_size=8,
                   progress=False)


def test_mix_settings_come_from_the_config():
    from dualmode_rl.orchestration.config import ConfigError, load_config
    from dualmode_rl.orchestration.prefilter import mix_control

    assert mix_control(load_config()) == {"joint": False, "rebalance_to": None}
    assert mix_control(load_config(None, ["filter.rebalance=true", "filter.joint=true"])) == {
        "joint": True, "rebalance_to": "input"}
    assert mix_control(load_config(None, ["filter.rebalance=true", "data.reasoning_share=0.3"]))["rebalance_to"] == 0.3
    with pytest.raises(ConfigError, match="config key 'filter.joint'"):
        load_config(None, ["filter.joint=sometimes"])
    with pytest.raises(ConfigError, match="config key 'filter.rebalance'"):
        load_config(None, ["filter.rebalance=[1]"])
