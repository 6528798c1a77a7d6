"""A policy loss and an advantage estimator as plug-ins (docs/custom-algorithm.md).

Use them with `algorithm.loss=examples/custom_algorithm.py:token_mean_pg` and
`algorithm.advantage=examples/custom_algorithm.py:median_baseline`. At start-up each is checked against
the contract in dualmode_rl/rl/contracts.py; one that breaks it stops the run with a message naming it.
"""
import torch


def token_mean_pg(inputs, norm, settings):
    """REINFORCE with every token of the batch weighted alike: -A * log pi(token), summed over the
    micro-batch's tokens and divided by the whole batch's token count (`norm`), so micro-batch losses add
    up to the batch loss. No ratio, no KL: `settings` is not used."""
    per_token = -inputs.advantages.unsqueeze(1) * inputs.logprobs
    loss = (per_token * inputs.mask).sum() / max(norm.num_tokens, 1)
    tokens = inputs.mask.sum() / norm.num_sequences  # this micro-batch's share of the mean completion length
    return loss, {"tokens_per_sequence": tokens.detach()}


def median_baseline(rewards, valid=None, correct=None, modes=None, normalize="batch"):
    """A_i = r_i - the median reward of its group's scored samples: a baseline that one outlying shaped
    reward does not move. Samples without a score (`valid` False) get 0. Within groups only, so the
    groups' `modes` and `normalize` (algorithm.normalize) change nothing."""
    valid = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid.bool()
    rewards = rewards if rewards.is_floating_point() else rewards.float()
    median = torch.where(valid, rewards, torch.full_like(rewards, float("nan"))).nanmedian(dim=1, keepdim=True).values
    return torch.where(valid, rewards - median, torch.zeros_like(rewards))
