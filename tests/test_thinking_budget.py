"""The thinking budget (rollout.reasoning.thinking_budget): vLLM and HF engines stop think blocks at the
budget, record the forced `</think>`, and the learner gives it no loss weight or importance ratio."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from dualmode_rl.orchestration.batch_builder import build_batch
from dualmode_rl.orchestration.cli import main
from dualmode_rl.rewards.types import RewardOutput
from dualmode_rl.rl.advantages import get_advantage
from dualmode_rl.rl.learner import Learner, LearnerConfig
from dualmode_rl.rollout.hf_engine import HfEngine
from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig
from dualmode_rl.rollout.thinking_budget import ThinkMarkers, forced_positions, think_markers, think_tokens
from dualmode_rl.rollout.types import NON_REASONING, REASONING, GenerationRequest
from rl_fixtures import make_tiny_exaone, random_batch
from rollout_fixtures import MAX_MODEL_LEN, tiny_model_dir, vllm_engine  # noqa: F401
from test_cli import cli

BUDGET = 4
MARKERS = ThinkMarkers(open_id=10, close_id=11)
REQUESTS = [GenerationRequest(f"r{i}", f"What is {i} + 3?", REASONING, n=4) for i in range(3)] + [
    GenerationRequest("n0", "What is 2 + 3?", NON_REASONING, n=4)]


def test_budget_rule_on_hand_written_tokens():
    reasoning_prompt, non_reasoning_prompt = [5, 10, 7], [5, 10, 7, 11, 7]  # `<think>\n` / an empty think block
    assert forced_positions(reasoning_prompt, [8, 9, 11, 12], MARKERS, 3) == [2]  # "\n" + 2 sampled = 3
    assert forced_positions(reasoning_prompt, [8, 11, 12, 13], MARKERS, 3) == []  # closed before the budget
    assert forced_positions(reasoning_prompt, [11, 12], MARKERS, 0) == [0]
    assert forced_positions(reasoning_prompt, [8, 9, 12], MARKERS, None) == []
    assert forced_positions(non_reasoning_prompt, [8, 9, 10, 1, 2, 11, 3], MARKERS, 2) == [5]  # a re-opened block
    with pytest.raises(RuntimeError, match="position 2 should hold the forced"):
        forced_positions(reasoning_prompt, [8, 9, 12], MARKERS, 3)
    assert think_tokens(reasoning_prompt, [8, 9, 11, 12], MARKERS) == 3
    assert think_tokens(reasoning_prompt, [8, 9], MARKERS) == 3  # unclosed: all of it
    assert think_tokens(non_reasoning_prompt, [8, 9], MARKERS) == 0


def test_masked_tokens_weigh_nothing_in_loss_ratios_and_token_counts(tmp_path):
    """A batch whose last completion tokens have loss weight 0 (and absurd behaviour log-probs there) makes
    the same step as the batch without those tokens: dropping a last token leaves every other token's
    context unchanged, so loss, KL, truncated-ratio share and gradient must agree."""
    model = make_tiny_exaone(tmp_path / "m")
    full = random_batch(3, 2, vocab_size=64, seed=1, completion_len=(2, 10))
    full.rollout_logprobs = [[0.0] * (len(c) - 1) + [-50.0] for c in full.completion_ids]  # ratio e^50 if counted
    full.loss_mask = [[1.0] * (len(c) - 1) + [0.0] for c in full.completion_ids]
    cut = replace(full, completion_ids=[c[:-1] for c in full.completion_ids],
                  rollout_logprobs=[r[:-1] for r in full.rollout_logprobs], loss_mask=None)
    config = LearnerConfig(model_path=str(model), beta=0.01, lr=1e-3, off_policy_correction="tis")
    got, expected = Learner(config).step(full), Learner(config).step(cut)
    # fp32 sums of ~50 token terms, computed at different padded widths: rounding differs by ~1e-6 relative
    for key in ("loss", "kl", "off_policy/capped_frac", "mismatch/logprob_abs", "grad_norm", "num_tokens",
                "logprob/reasoning"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    assert expected["off_policy/capped_frac"] < 0.5  # so a counted e^50 ratio would have shown


def check_budgeted_groups(groups, markers: ThinkMarkers) -> int:
    """Counted here from the ids: every think block (from a `<think>` to the next marker) holds at most
    BUDGET tokens, and the `</think>` ending one of exactly BUDGET is recorded as forced, with log-prob 0.
    The budget applies to reasoning mode only. Returns the budget hits."""
    hits = 0
    for group in groups:
        prompt = group.prompt_token_ids
        for s in group.samples:
            if group.mode == NON_REASONING:
                assert not s.budget_hit and s.forced_positions == []
                continue
            full = prompt + s.token_ids
            first = len(prompt) - 1 - prompt[::-1].index(markers.open_id)
            cut = []
            for start in (i for i in range(first, len(full)) if full[i] == markers.open_id):
                end = next((j for j in range(start + 1, len(full)) if full[j] in (markers.open_id, markers.close_id)),
                           len(full))
                assert end - start - 1 <= BUDGET, (start, end, s.token_ids)
                if end < len(full) and full[end] == markers.close_id and end - start - 1 == BUDGET:
                    cut.append(end - len(prompt))
            assert s.forced_positions == cut and s.budget_hit == bool(cut)
            assert all(s.logprobs[p] == 0.0 for p in cut)
            assert s.sampled_mask() == [float(i not in cut) for i in range(len(s.token_ids))]
            hits += s.budget_hit
    return hits


def check_learner_mask(model_dir, groups) -> None:
    """The micro-batch mask the learner's loss uses is 0 exactly on the forced tokens."""
    outputs = [RewardOutput(float(i % 2)) for i, _ in enumerate(s for g in groups for s in g.samples)]
    batch, _ = build_batch(groups, outputs, get_advantage("agapo"))
    learner = Learner(LearnerConfig(model_path=str(model_dir), beta=0.0))
    samples = [s for g in groups for s in g.samples]
    forced = 0
    for mb in learner._micro_batches(batch):
        for row, i in enumerate(mb.sequence_indices):
            expected = torch.tensor(samples[i].sampled_mask())
            assert torch.equal(mb.mask[row, :len(expected)], expected)
            forced += len(samples[i].forced_positions)
    assert forced > 0
    assert learner._norm(batch).num_tokens == sum(len(s.token_ids) for s in samples) - forced


def budgeted(sampling: SamplingConfig) -> SamplingConfig:
    short = replace(sampling, reasoning=replace(sampling.reasoning, max_tokens=16),
                    non_reasoning=replace(sampling.non_reasoning, max_tokens=8))
    return short.with_thinking_budget(BUDGET)


def test_hf_engine_budget_stops_think_blocks_and_masks_forced_tokens(tiny_model_dir):  # noqa: F811
    sampling = budgeted(SamplingConfig(reasoning=ModeSampling(1.0, 1.0, 16), non_reasoning=ModeSampling(1.0, 1.0, 8)))
    engine = HfEngine(str(tiny_model_dir), sampling, max_model_len=MAX_MODEL_LEN, seed=0)
    groups = engine.generate(REQUESTS)
    assert check_budgeted_groups(groups, think_markers(engine.tokenizer)) > 0
    check_learner_mask(tiny_model_dir, groups)


@pytest.mark.slow
def test_vllm_budget_stops_think_blocks_and_masks_forced_tokens(vllm_engine, tiny_model_dir):  # noqa: F811
    configured = vllm_engine.sampling
    vllm_engine.sampling = budgeted(configured)  # the shared engine: put its settings back afterwards
    try:
        groups = vllm_engine.generate(REQUESTS)
    finally:
        vllm_engine.sampling = configured
    assert check_budgeted_groups(groups, think_markers(vllm_engine.tokenizer)) > 0
    check_learner_mask(tiny_model_dir, groups)


def test_eval_budget_sweep_arguments_are_checked(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["eval", "--thinking-budgets", "16,x", "--json", "e.json"])
    assert exited.value.code == 2 and "comma-separated" in capsys.readouterr().err
    assert main(["eval", "--thinking-budgets", "16"]) == 2 and "needs --json" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_thinking_budgets_writes_the_table_and_plot(tmp_path, tiny_checkpoint):
    out = cli("eval", "--model", tiny_checkpoint, "--json", tmp_path / "e.json", "--thinking-budgets", "2,4",
              "eval.limit=3", "eval.samples=2", "rollout.engine=hf",
              "rollout.reasoning.max_tokens=12", "rollout.non_reasoning.max_tokens=8")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "e.json").read_text())
    table = report["thinking_budgets"]
    assert [r["thinking_budget"] for r in table] == [2, 4, None]
    for row in table:
        assert row["samples"] == 6 and 0 <= row["accuracy"] <= 1 and 0 <= row["budget_hit"] <= 1
        if row["thinking_budget"] is not None:
            assert row["mean_think_tokens"] <= row["thinking_budget"]
    assert table[0]["budget_hit"] > 0
    assert (tmp_path / "e.thinking_budgets.png").stat().st_size > 0
    assert "thinking budget" in out.stdout and {"reasoning", "non_reasoning"} <= set(report)
