"""Policy losses, side by side: AGAPO, GRPO, DAPO, Dr. GRPO.

Every loss takes per-token tensors of one micro-batch, padded to `[N, T]`, plus `LossNorm`,
the totals of the *whole* batch (all micro-batches, all data-parallel ranks). Each returns
`(loss, metrics)` where loss and metrics are this micro-batch's share of the batch value:
summing them over micro-batches (and ranks) gives the batch loss and the batch means. Called
once on a whole batch with `LossNorm.of(mask)`, they are the plain batch loss and means.

GRPO, DAPO and Dr. GRPO follow TRL's `GRPOTrainer._compute_loss` (token-level importance
ratio, per-token k3 KL added with weight beta, TRL's aggregation per loss type); a test checks
them against TRL's own code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .off_policy import importance_ratio, off_policy_weights


@dataclass
class LossInputs:
    logprobs: torch.Tensor  # [N, T] current policy, differentiable
    mask: torch.Tensor  # [N, T] 1.0 on completion tokens
    advantages: torch.Tensor  # [N]
    old_logprobs: torch.Tensor | None = None  # [N, T] behaviour policy (the ratios' "old"); None = on-policy
    ref_logprobs: torch.Tensor | None = None  # [N, T] reference policy; needed when beta > 0
    entropy: torch.Tensor | None = None  # [N, T] for metrics only


@dataclass
class LossNorm:
    """Batch-wide totals that make micro-batch losses add up to the batch loss."""

    num_sequences: int
    num_tokens: int
    max_completion_length: int

    @classmethod
    def of(cls, mask: torch.Tensor, max_completion_length: int | None = None) -> "LossNorm":
        """The totals of `mask`; a sequence whose every weight is 0 (left out of the loss) is not counted."""
        return cls(
            num_sequences=int((mask.sum(-1) > 0).sum().item()),
            num_tokens=int(mask.sum().item()),
            max_completion_length=max_completion_length or mask.shape[1],
        )


@dataclass
class LossSettings:
    beta: float = 0.0
    epsilon_low: float = 0.2
    epsilon_high: float | None = None  # None: epsilon_low, except DAPO's clip-higher default 0.28
    # AGAPO aggregation: "token_sum" (default: sum_t over each sequence, mean over sequences, as
    # the printed objective), "token_mean" (all tokens of the batch share one mean), or
    # "seq_token_mean" (mean over each sequence's tokens, then over sequences).
    loss_agg: str = "token_sum"
    # Off-policy correction against the behaviour policy in LossInputs.old_logprobs (rl/off_policy.py):
    # "none", "tis" (weights min(ratio, cap)) or "mis" (ratio inside [1/cap, cap], else 0), the ratio
    # per "sequence" (unbiased below the cap) or per "token". AGAPO multiplies its whole per-token loss
    # (policy term and both sequence-KL terms) by the weights; the clipped losses take their ratio
    # against old_logprobs, and "mis" also drops the tokens (or sequences) outside the bounds.
    off_policy_correction: str = "none"
    off_policy_cap: float = 2.0
    off_policy_level: str = "sequence"
    # GRPO/DAPO/Dr. GRPO: multiply the per-token k3 KL by the ratio pi_theta/pi_old (TRL's
    # `use_bias_correction_kl`, default True in TRL 1.16); a no-op on-policy.
    kl_ratio_correction: bool = True


LossFn = Callable[[LossInputs, LossNorm, LossSettings], tuple[torch.Tensor, dict[str, torch.Tensor]]]
DAPO_EPSILON_HIGH = 0.28


def _token_mean(values: torch.Tensor, mask: torch.Tensor, norm: LossNorm) -> torch.Tensor:
    return (values * mask).sum() / max(norm.num_tokens, 1)


def _entropy_metric(inputs: LossInputs, norm: LossNorm) -> dict[str, torch.Tensor]:
    if inputs.entropy is None:
        return {}
    return {"entropy": _token_mean(inputs.entropy.detach(), inputs.mask, norm)}


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, norm: LossNorm, how: str) -> torch.Tensor:
    sequences = max(norm.num_sequences, 1)  # 0 when every sequence is left out of the loss: the loss is 0
    if how == "token_sum":
        return (per_token * mask).sum() / sequences
    if how == "token_mean":
        return (per_token * mask).sum() / max(norm.num_tokens, 1)
    if how == "seq_token_mean":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sum() / sequences
    if how == "dr_grpo":
        return (per_token * mask).sum() / (sequences * norm.max_completion_length)
    raise ValueError(f"unknown loss aggregation '{how}'; known: token_sum, token_mean, seq_token_mean, dr_grpo")


def cumulative_future_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """out[:, t] = sum_{s >= t} values[:, s] * mask[:, s]."""
    masked = values * mask
    return masked.flip(-1).cumsum(-1).flip(-1)


def sequence_kl_surrogate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token terms whose sum over a sequence has value KL_seq = sum_t log(pi/pi_ref)(o_t) and
    gradient sum_t grad log pi(o_t) * (1 + sum_{s>=t} log(pi/pi_ref)(o_s)) (Tang & Munos 2025):
    the cumulative-future-log-ratio score term plus the direct term. On-policy, its expectation's
    gradient is the exact gradient of KL(pi_theta(.|q) || pi_ref(.|q)) over sequences; off-policy,
    importance weights must scale both terms.
    """
    log_ratio = logprobs - ref_logprobs
    future = cumulative_future_sum(log_ratio.detach(), mask)
    return log_ratio + (logprobs - logprobs.detach()) * future


def _off_policy(inputs: LossInputs, settings: LossSettings, loss: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weights, capped) of the settings' correction against old_logprobs; None without correction."""
    if settings.off_policy_correction == "none":
        return None
    if inputs.old_logprobs is None:
        raise ValueError(f"loss '{loss}': off_policy_correction '{settings.off_policy_correction}' needs the "
                         "behaviour policy's log-probs (old_logprobs)")
    ratio = importance_ratio(inputs.logprobs, inputs.old_logprobs, inputs.mask, settings.off_policy_level)
    return off_policy_weights(ratio, settings.off_policy_correction, settings.off_policy_cap)


def agapo_loss(inputs: LossInputs, norm: LossNorm, settings: LossSettings):
    """Plain policy gradient, no ratio, no clipping, minus beta * sequence-level KL:
    loss = -A_i * sum_t log pi(o_t) + beta * KL_seq, aggregated per `settings.loss_agg`.
    With an off-policy correction, every per-token term carries its importance weight (detached)."""
    lp, mask = inputs.logprobs, inputs.mask
    metrics: dict[str, torch.Tensor] = {}
    per_token = -inputs.advantages.unsqueeze(1) * lp
    if settings.beta != 0.0:
        if inputs.ref_logprobs is None:
            raise ValueError("loss 'agapo': beta != 0 needs ref_logprobs")
        per_token = per_token + settings.beta * sequence_kl_surrogate(lp, inputs.ref_logprobs, mask)
        metrics["kl"] = _token_mean((lp - inputs.ref_logprobs).detach(), mask, norm)
        metrics["kl_seq"] = ((lp - inputs.ref_logprobs).detach() * mask).sum() / max(norm.num_sequences, 1)
    correction = _off_policy(inputs, settings, "agapo")
    if correction is not None:
        per_token = per_token * correction[0]
    loss = _aggregate(per_token, mask, norm, settings.loss_agg)
    metrics["clip_frac"] = torch.zeros((), dtype=lp.dtype, device=lp.device)
    return loss, metrics | _entropy_metric(inputs, norm)


def _clipped_policy_loss(inputs: LossInputs, norm: LossNorm, settings: LossSettings,
                         epsilon_high: float, aggregation: str):
    lp, mask = inputs.logprobs, inputs.mask
    old = lp.detach() if inputs.old_logprobs is None else inputs.old_logprobs
    advantages = inputs.advantages.unsqueeze(1)
    ratio = torch.exp(lp - old)
    clipped = torch.clamp(ratio, 1 - settings.epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    metrics: dict[str, torch.Tensor] = {}
    if settings.beta != 0.0:
        if inputs.ref_logprobs is None:
            raise ValueError("clipped policy loss: beta != 0 needs ref_logprobs")
        delta = inputs.ref_logprobs - lp
        per_token_kl = torch.exp(delta) - delta - 1  # k3 estimator, as TRL
        if settings.kl_ratio_correction:
            per_token_kl = per_token_kl * ratio
        per_token = per_token + settings.beta * per_token_kl
        metrics["kl"] = _token_mean(per_token_kl.detach(), mask, norm)
    correction = _off_policy(inputs, settings, "clipped policy loss")
    if correction is not None and settings.off_policy_correction == "mis":
        per_token = per_token * ~correction[1]  # the clip already bounds the ratio; "mis" also drops
    loss = _aggregate(per_token, mask, norm, aggregation)
    low = (ratio < 1 - settings.epsilon_low) & (advantages < 0)
    high = (ratio > 1 + epsilon_high) & (advantages > 0)
    metrics["clip_frac"] = _token_mean((low | high).float().detach(), mask, norm)
    return loss, metrics | _entropy_metric(inputs, norm)


def grpo_loss(inputs: LossInputs, norm: LossNorm, settings: LossSettings):
    """TRL loss_type='grpo': PPO-clip per token, mean over each sequence, mean over sequences."""
    eps_high = settings.epsilon_high if settings.epsilon_high is not None else settings.epsilon_low
    return _clipped_policy_loss(inputs, norm, settings, eps_high, "seq_token_mean")


def dapo_loss(inputs: LossInputs, norm: LossNorm, settings: LossSettings):
    """TRL loss_type='dapo': clip-higher (eps_high default 0.28), token-level mean over the batch."""
    eps_high = settings.epsilon_high if settings.epsilon_high is not None else DAPO_EPSILON_HIGH
    return _clipped_policy_loss(inputs, norm, settings, eps_high, "token_mean")


def dr_grpo_loss(inputs: LossInputs, norm: LossNorm, settings: LossSettings):
    """TRL loss_type='dr_grpo': token sum / (num sequences * max completion length)."""
    eps_high = settings.epsilon_high if settings.epsilon_high is not None else settings.epsilon_low
    return _clipped_policy_loss(inputs, norm, settings, eps_high, "dr_grpo")


LOSSES: dict[str, LossFn] = {
    "agapo": agapo_loss,
    "grpo": grpo_loss,
    "dapo": dapo_loss,
    "dr_grpo": dr_grpo_loss,
}


def get_loss(name: str) -> LossFn:
    if name not in LOSSES:
        raise KeyError(f"unknown policy loss '{name}'; known: {sorted(LOSSES)}")
    return LOSSES[name]
