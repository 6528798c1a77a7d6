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
from dualmode_rl.filtering.journal import ChunkJournal, JournalMismatch
from dualmode_rl.filtering.rows import FilterDataError
from dualmode_rl.rewards.types import RewardOutput
from dualmode_rl.rollout.types import RolloutGroup, Sample

SAMPLES = 4
TIMING_KEYS = {"generation_seconds", "scoring_seconds", "wall_seconds", "journal_generation_seconds",
               "setup_seconds", "finish_seconds",
               "generated_prompts", "resumed_prompts", "dataset_dir", "journal_dir"}


def pass_count_of(index: int) -> int:
    """The fake model solves prompt i in (i * 3) % (SAMPLES + 1) of its samples."""
    return (index * 3) % (SAMPLES + 1)


class FakeGenerator:
    """Deterministic samples: 'ok' for a correct one, 'bad' otherwise; counts what it was asked."""

    def __init__(self, fail_on_call: int | None = None, delay_s: float = 0.0, samples: int | None = None):
        self.calls, self.requested, self.seeds = 0, [], []
        self.fail_on_call, self.delay_s, self.samples = fail_on_call, delay_s, samples

    def generate(self, requests, seed=None):
        self.calls += 1
        self.seeds.append(seed)
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("generator died")
        time.sleep(self.delay_s)
        self.requested += [r.request_id for r in requests]
        groups = []
        for r in requests:
            n = self.samples or r.n
            good = pass_count_of(int(r.request_id))
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
    assert sorted(saved["plots"]) == sorted(p.name for p in tmp_path.glob("histogram-*.png")) and len(saved["plots"]) == 4
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
