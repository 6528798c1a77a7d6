"""Off-policy correction: importance ratios between the learner's policy and the sampler's.

The behaviour policy is the sampler's own distribution (`Sample.logprobs`: the engine's log-probs
after temperature, top-k and top-p). The ratio pi_theta / pi_sampler is either per token
("token" level) or one per sequence, the product of its tokens' ratios, given to each of its
tokens ("sequence" level).

- "tis" (truncated importance sampling) weights each token by min(ratio, cap);
- "mis" (masked importance sampling) weights it by the ratio where 1/cap <= ratio <= cap, else 0.

Only the sequence-level ratio makes the corrected gradient unbiased for a sequence-level reward:
E_sampler[ratio(o) * g(o)] = E_learner[g(o)] needs the whole sequence's ratio, while a token's own
ratio leaves its prefix and its suffix drawn from the sampler. tests/test_rl_losses.py checks both
by exact enumeration. Token-level weights have less variance, and a bias that grows with the gap.
"""
from __future__ import annotations

import torch

CORRECTIONS = ("none", "tis", "mis")
LEVELS = ("sequence", "token")
MAX_LOG_RATIO = 20.0  # long sequences' summed log-ratios stay finite in fp32 (as TRL clamps them); any cap is far below e^20


def importance_ratio(logprobs: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor,
                     level: str) -> torch.Tensor:
    """[N, T] detached pi_theta / pi_behaviour per token, or each sequence's product on every token."""
    log_ratio = (logprobs.detach() - behaviour) * mask
    if level == "sequence":
        log_ratio = log_ratio.sum(-1, keepdim=True).expand_as(mask)
    elif level != "token":
        raise ValueError(f"off-policy level '{level}' is not one of {LEVELS}")
    return torch.exp(log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))


def off_policy_weights(ratio: torch.Tensor, correction: str, cap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, capped): the correction's per-token weights and where the cap truncated or masked.
    "none" weighs every token 1 and marks what "tis" would truncate."""
    if correction == "mis":
        capped = (ratio > cap) | (ratio < 1.0 / cap)
        return torch.where(capped, torch.zeros_like(ratio), ratio), capped
    capped = ratio > cap
    if correction == "tis":
        return ratio.clamp(max=cap), capped
    if correction == "none":
        return torch.ones_like(ratio), capped
    raise ValueError(f"off-policy correction '{correction}' is not one of {CORRECTIONS}")


def sampler_gap_metrics(logprobs: torch.Tensor, sampler: torch.Tensor, mask: torch.Tensor, row_modes: list[str],
                        tokens: dict[str, float], correction: str, cap: float, level: str
                        ) -> tuple[dict[str, float], dict[str, float]]:
    """How far the learner's log-probs are from the sampler's on one micro-batch whose rows are in
    `row_modes`: (sums, maxima). Sums are this micro-batch's share of token means over `tokens`
    (completion tokens of the whole batch per mode; "" for all modes): `mismatch/logprob_abs` (mean
    |learner - sampler| log-prob), `off_policy/ratio_mean` and `off_policy/capped_frac` (share whose
    weight `correction` truncated or masked; for "none", what "tis" would). Maxima hold
    `off_policy/ratio_max`. Keys end in `/<mode>`, or nothing for the whole batch."""
    ratio = importance_ratio(logprobs, sampler, mask, level)
    _, capped = off_policy_weights(ratio, correction, cap)
    per_token = {"mismatch/logprob_abs": (logprobs.detach() - sampler).abs(), "off_policy/ratio_mean": ratio,
                 "off_policy/capped_frac": capped.float()}
    sums, maxima = {}, {}
    for mode, total in tokens.items():
        rows = torch.tensor([not mode or m == mode for m in row_modes], device=mask.device)
        selected = mask * rows[:, None]
        suffix = f"/{mode}" if mode else ""
        for key, values in per_token.items():
            sums[key + suffix] = ((values * selected).sum() / max(total, 1)).item()
        chosen = ratio[selected.bool()]
        maxima["off_policy/ratio_max" + suffix] = chosen.max().item() if chosen.numel() else 0.0
    return sums, maxima
