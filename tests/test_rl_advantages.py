"""Advantage estimators on hand-worked batches."""
import math
import statistics

import pytest
import torch
from tolerances import tolerance

from dualmode_rl.rl import advantages
from dualmode_rl.rl.advantages import ADVANTAGES, get_advantage

# group 0: one right of four; group 1: all wrong; group 2: all right. float64: the estimators keep
# the rewards' dtype, so the hand-worked values are checked to float64 rounding, not float32's.
REWARDS = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
# Each advantage chains about 40 rounded operations (a group sum of G = 4, the mean and the sum of
# squares over K = 12, a square root, divisions), on values of size <= 3 here. An eps placed
# inside the square root instead of outside, or a biased std, moves them by >= 1e-7: far above.
TOL = tolerance(torch.float64, n_terms=40, magnitude=3.0)


def f64(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_agapo_matches_the_printed_equations_by_hand():
    # leave-one-out: group 0 -> [1, -1/3, -1/3, -1/3]; groups 1 and 2 -> 0. Mean over K=12 is 0.
    # unbiased std over K: sqrt((1 + 3/9) / 11) = sqrt(4/33)
    std = math.sqrt(4 / 33)
    expected = f64([[1.0, -1 / 3, -1 / 3, -1 / 3], [0.0] * 4, [0.0] * 4]) / (std + 1e-6)
    torch.testing.assert_close(advantages.agapo(REWARDS), expected, rtol=0, atol=TOL)


def test_agapo_gives_zero_to_uniform_groups_and_agapo_neg_does_not():
    plain = get_advantage("agapo")(REWARDS)
    assert plain[1:].abs().max() < TOL  # zero up to float rounding of the batch mean

    neg = get_advantage("agapo_neg", all_incorrect_advantage=-0.1)(REWARDS)
    # group stage: [1, -1/3 x3], [-0.1 x4], [0 x4]; batch mean -1/30; centred sum of squares 1.36
    std = math.sqrt(1.36 / 11)
    expected = (f64([[1.0, -1 / 3, -1 / 3, -1 / 3], [-0.1] * 4, [0.0] * 4]) + 1 / 30) / (std + 1e-6)
    torch.testing.assert_close(neg, expected, rtol=0, atol=TOL)
    assert (neg[1] < 0).all()  # the all-incorrect group now gets a negative signal
    # mixed group keeps its ordering and its leave-one-out gaps up to the global scale
    assert neg[0, 0] > 0 > neg[0, 1]
    # eps (1e-6) is added to two different stds: the ratio is off by at most eps * (1/std + 1/std_plain)
    torch.testing.assert_close(neg[0, 0] - neg[0, 1], (plain[0, 0] - plain[0, 1]) * math.sqrt(4 / 33) / std,
                               rtol=1e-6 * (1 / std + 1 / math.sqrt(4 / 33)), atol=4 * TOL)


def test_agapo_neg_strength_is_a_parameter():
    weak = get_advantage("agapo_neg", all_incorrect_advantage=-0.05)(REWARDS)[1, 0]
    strong = get_advantage("agapo_neg", all_incorrect_advantage=-0.5)(REWARDS)[1, 0]
    assert strong < weak < 0
    with pytest.raises(ValueError, match="all_incorrect_advantage"):
        advantages.agapo_neg(REWARDS, all_incorrect_advantage=0.3)


def test_grpo_dr_grpo_rloo_by_hand():
    group = REWARDS[:1]
    # mean 0.25, unbiased std 0.5
    torch.testing.assert_close(advantages.grpo(group), f64([[0.75, -0.25, -0.25, -0.25]]) / (0.5 + 1e-4), rtol=0, atol=TOL)
    torch.testing.assert_close(advantages.dr_grpo(group), f64([[0.75, -0.25, -0.25, -0.25]]), rtol=0, atol=TOL)
    torch.testing.assert_close(advantages.rloo(group), f64([[1.0, -1 / 3, -1 / 3, -1 / 3]]), rtol=0, atol=TOL)
    assert (advantages.grpo(REWARDS)[1:] == 0).all()


def test_registry_and_bad_input():
    assert set(ADVANTAGES) == {"agapo", "agapo_neg", "grpo", "dr_grpo", "rloo"}
    for name, fn in ADVANTAGES.items():
        assert fn(REWARDS).shape == REWARDS.shape, name
    with pytest.raises(KeyError, match="unknown advantage estimator 'ppo'"):
        get_advantage("ppo")
    with pytest.raises(ValueError, match="agapo.*at least 2"):
        advantages.agapo(torch.ones(3, 1))
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        advantages.grpo(torch.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        advantages.rloo(torch.tensor([[1.0, float("nan")]]))


def test_samples_without_a_reward_take_no_part():
    """Every estimator on groups with failed rewards equals the estimator on the scored samples alone
    (here three per group), and gives the failed ones 0; a group left with one sample has no baseline."""
    valid = torch.tensor([[True, True, False, True], [False, True, True, True], [True, True, True, False]])
    failed = REWARDS.masked_fill(~valid, float("nan"))  # whatever a failed reward left behind
    for name, fn in ADVANTAGES.items():
        out = fn(failed, valid=valid)
        assert (out[~valid] == 0).all(), name
        torch.testing.assert_close(out[valid].view(3, 3), fn(REWARDS[valid].view(3, 3)), msg=name)
    alone = torch.tensor([[True, False, False, False], [True] * 4, [True] * 4])
    for name in ("agapo", "grpo", "dr_grpo", "rloo"):
        assert ADVANTAGES[name](REWARDS, valid=alone)[0].abs().max() < 1e-6, name


# reasoning: one right of four, then all wrong; non-reasoning: two of four, then three of four
TWO_MODES = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
MODES = ["reasoning", "non_reasoning", "reasoning", "non_reasoning"]


def _standardised(values: list[float]) -> list[float]:
    mean, std = statistics.mean(values), statistics.stdev(values)
    return [(v - mean) / (std + 1e-6) for v in values]


@pytest.mark.parametrize("name, all_wrong", [("agapo", 0.0), ("agapo_neg", -0.1)])
def test_per_mode_normalisation_by_hand(name, all_wrong):
    """normalize "mode": AGAPO's global stage within each mode's samples; "batch": over all 16."""
    third = 1 / 3
    loo = {"reasoning": [1.0, -third, -third, -third] + [all_wrong] * 4,  # group stage, groups 0 and 2
           "non_reasoning": [2 * third, 2 * third, -2 * third, -2 * third, third, third, third, -1.0]}  # 1 and 3
    per_mode = {mode: _standardised(values) for mode, values in loo.items()}
    expected = torch.tensor([per_mode["reasoning"][:4], per_mode["non_reasoning"][:4],
                             per_mode["reasoning"][4:], per_mode["non_reasoning"][4:]])
    fn = ADVANTAGES[name]
    torch.testing.assert_close(fn(TWO_MODES, modes=MODES, normalize="mode"), expected, rtol=1e-6, atol=1e-7)
    whole = _standardised(loo["reasoning"][:4] + loo["non_reasoning"][:4] + loo["reasoning"][4:] + loo["non_reasoning"][4:])
    by_batch = fn(TWO_MODES, modes=MODES)
    torch.testing.assert_close(by_batch, torch.tensor(whole).view(4, 4), rtol=1e-6, atol=1e-7)
    assert (by_batch - expected).abs().max() > 0.1  # the two differ: the modes spread differently


def test_per_mode_normalisation_keeps_each_mode_to_itself():
    longer = TWO_MODES.clone()
    longer[0] = torch.tensor([1.0, 1.0, 0.0, 0.0])  # change the reasoning rewards only
    for normalize, same in (("mode", True), ("batch", False)):
        a, b = (advantages.agapo(r, modes=MODES, normalize=normalize)[1::2] for r in (TWO_MODES, longer))
        assert torch.equal(a, b) == same, normalize


def test_grpo_family_ignore_the_normalisation():
    for name in ("grpo", "dr_grpo", "rloo"):
        fn = ADVANTAGES[name]
        assert torch.equal(fn(TWO_MODES, modes=MODES, normalize="mode"), fn(TWO_MODES)), name
    with pytest.raises(ValueError, match="one mode per group"):
        advantages.agapo(TWO_MODES, normalize="mode")
    with pytest.raises(ValueError, match="normalize must be one of"):
        advantages.grpo(TWO_MODES, normalize="prompt")
