"""DAPO's overlong handling: the soft penalty's formula, and truncated samples masked out of the loss."""
import sys
from pathlib import Path

import pytest
import torch

from dualmode_rl.orchestration.batch_builder import build_batch
from dualmode_rl.rewards.types import RewardOutput
from dualmode_rl.rl.advantages import agapo
from dualmode_rl.rl.batch import TrainingBatch
from dualmode_rl.rl.learner import Learner, LearnerConfig
from dualmode_rl.rl.overlong import OverlongRule, soft_overlong_penalty
from dualmode_rl.rollout.types import RolloutGroup, Sample

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rl_fixtures import make_tiny_exaone  # noqa: E402


def test_soft_penalty_equals_dapos_formula_at_three_lengths():
    # DAPO's own setting: L_max = 20480, L_cache = 4096, so the buffer starts at 16384
    assert soft_overlong_penalty(16000, 20480, 4096) == 0.0  # L <= L_max - L_cache
    assert soft_overlong_penalty(18432, 20480, 4096) == -0.5  # (16384 - 18432) / 4096
    assert soft_overlong_penalty(20480, 20480, 4096) == -1.0  # at L_max
    assert soft_overlong_penalty(20481, 20480, 4096) == -1.0  # beyond
    assert OverlongRule("soft_penalty", 10).penalty(9) == -0.5  # default buffer: a fifth of L_max, (8 - 9) / 2
    assert OverlongRule("mask", 10, 2).penalty(10) == 0.0 and OverlongRule("none", 10).penalty(10) == 0.0
    with pytest.raises(ValueError, match="buffer"):
        OverlongRule("soft_penalty", 10, 11)


def _groups(lengths: list[list[int]], modes: list[str], max_tokens: int) -> list[RolloutGroup]:
    """Groups of samples with these completion lengths; a sample of max_tokens tokens was truncated."""
    return [RolloutGroup(str(i), mode, [5, 6], [
        Sample([3 + (i + j + t) % 50 for t in range(n)], [-0.5] * n, "t", "length" if n == max_tokens else "stop")
        for j, n in enumerate(ns)]) for i, (ns, mode) in enumerate(zip(lengths, modes))]


def test_soft_penalty_is_added_to_the_rewards_before_the_advantages():
    groups = _groups([[2, 9, 10]], ["reasoning"], max_tokens=10)
    outputs = [RewardOutput(1.0)] * 3
    rule = {"reasoning": OverlongRule("soft_penalty", 10, 4)}
    batch, rewards = build_batch(groups, outputs, agapo, overlong=rule)
    assert rewards.tolist() == [[1.0, 1.0 + (6 - 9) / 4, 0.0]]
    assert batch.advantages[0] > batch.advantages[1] > batch.advantages[2]  # shorter is better
    unpenalised, _ = build_batch(groups, outputs, agapo, overlong={"non_reasoning": rule["reasoning"]})
    assert unpenalised.advantages == [0.0] * 3  # another mode's rule does not apply


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_exaone(tmp_path_factory.mktemp("overlong") / "model", dtype=torch.float64)


def _without(batch: TrainingBatch, drop: list[int]) -> TrainingBatch:
    keep = [i for i in range(len(batch)) if i not in drop]
    return TrainingBatch(**{name: [getattr(batch, name)[i] for i in keep] for name in (
        "prompt_ids", "completion_ids", "advantages", "group_ids", "modes", "rollout_logprobs", "loss_mask")})


def test_mask_gives_a_truncated_sample_zero_gradient(model_dir):
    """With `mask`, the learner's update on a batch holding a truncated sample is the update on the batch
    without it: the sample adds no gradient and does not count as a sequence or its tokens. It still counts
    in the advantages: the others keep theirs, computed with it."""
    max_tokens = 6
    groups = _groups([[3, 6, 4], [2, 5, 6]], ["non_reasoning", "reasoning"], max_tokens)
    outputs = [RewardOutput(r) for r in (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)]
    rules = {"non_reasoning": OverlongRule("mask", max_tokens)}  # reasoning's truncated sample stays
    batch, _ = build_batch(groups, outputs, agapo, overlong=rules)
    assert [sum(row) for row in batch.loss_mask] == [3.0, 0.0, 4.0, 2.0, 5.0, 6.0]
    assert batch.advantages == build_batch(groups, outputs, agapo)[0].advantages  # the statistics are unchanged

    # float64 model, one update of lr * g / (|g| + 1) (adam_eps=1): the two updates differ only by the
    # summation order of the same gradient terms, ~1e-16 relative; a masked sample still counted would
    # change them by its share of the normalisers (1/6) or its own gradient, far above 1e-10
    settings = dict(model_path=str(model_dir), dtype="float64", fp32_lm_head=False, lr=1.0, adam_eps=1.0, beta=0.0,
                    max_grad_norm=None, micro_batch_tokens=64)
    updates = []
    for trained in (batch, _without(batch, [1])):
        learner = Learner(LearnerConfig(**settings))
        before = {k: v.clone() for k, v in learner.export_weights().items()}
        metrics = learner.step(trained)
        updates.append({k: v - before[k] for k, v in learner.export_weights().items()})
        assert metrics["num_sequences"] == 5 and metrics["num_tokens"] == 20
    assert max(u.abs().max().item() for u in updates[0].values()) > 1e-3
    for name, update in updates[0].items():
        torch.testing.assert_close(update, updates[1][name], rtol=1e-10, atol=1e-12)
