"""What every policy loss and advantage estimator must do, checked on each plug-in as it loads
(`algorithm.loss` / `algorithm.advantage` = "file.py:fn" or "module:fn") and on every built-in by the tests.

A loss `f(inputs: LossInputs, norm: LossNorm, settings: LossSettings) -> (loss, metrics)`:
- returns a finite scalar tensor and a dict of one-element metric tensors;
- has finite gradients, and none on padding (mask 0) tokens, whose values do not change the loss;
- splits: the loss, gradient and metrics of a batch equal the sums over any split of it into
  micro-batches, each called with the whole batch's `norm` (how the learner calls it).
An advantage estimator `f(rewards [B, G], valid=None, correct=None, modes=None, normalize="batch") -> [B, G]`
(`modes`: each group's mode; `normalize`: "batch" or "mode", algorithm.normalize; it may ignore both):
- returns finite advantages of the rewards' shape, 0 for each sample that is not `valid`, with either
  `normalize`;
- does not depend on the order of the prompts, nor of the samples within a group.
The checks run in float64 on a small fixed batch, so they cost a few milliseconds.
"""
from __future__ import annotations

import inspect

import torch

from dualmode_rl.constants import NON_REASONING, REASONING
from dualmode_rl.plugins import PluginError, load_object

from .advantages import NORMALIZE
from .losses import LossInputs, LossNorm, LossSettings

# Two float64 evaluations of one sum, in different orders, of a few dozen terms of size <= 10 differ by
# at most ~2 * 50 * 1.1e-16 * 10 (tests/tolerances.py); 1e-9 leaves room for a plug-in's own
# intermediate steps and is still far below any real error (a missing term, a wrong normaliser).
TOLERANCE = 1e-9
MICRO_BATCHES = [slice(0, 2), slice(2, 3), slice(3, 6)]


class ContractError(ValueError):
    """A loss or advantage estimator breaks the contract above; the message says which part."""


def load_loss_plugin(spec: str):
    return _load("policy loss", spec, "dualmode_rl.losses", check_loss)


def load_advantage_plugin(spec: str):
    return _load("advantage estimator", spec, "dualmode_rl.advantages", check_advantage)


def _load(kind: str, spec: str, entry_point_group: str, check):
    try:
        fn = load_object(spec, entry_point_group)
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        check(fn)
    except Exception as exc:  # noqa: BLE001 - any failure is a start-up error naming the spec
        raise PluginError(kind, spec, f"{type(exc).__name__}: {exc}") from exc
    return fn


# ---- losses

def loss_contract_inputs(padding: float = 0.0) -> tuple[LossInputs, torch.Tensor]:
    """Six sequences of up to 5 tokens, ragged, with `padding` in every tensor's padded positions."""
    g = torch.Generator().manual_seed(0)
    mask = (torch.arange(5)[None] < torch.tensor([5, 3, 4, 1, 5, 2])[:, None]).double()
    logprobs = -2 * torch.rand(6, 5, generator=g, dtype=torch.float64) - 0.05
    noisy = lambda: torch.where(mask.bool(), logprobs + 0.1 * torch.randn(6, 5, generator=g, dtype=torch.float64),  # noqa: E731
                                torch.full_like(logprobs, padding))
    old, ref = noisy(), noisy()
    logprobs = torch.where(mask.bool(), logprobs, torch.full_like(logprobs, padding)).requires_grad_(True)
    advantages = torch.randn(6, generator=g, dtype=torch.float64)
    entropy = torch.rand(6, 5, generator=g, dtype=torch.float64)
    return LossInputs(logprobs, mask, advantages, old, ref, entropy), mask


def check_loss(fn) -> None:
    _require_signature(fn, 3, "(inputs: LossInputs, norm: LossNorm, settings: LossSettings)")
    for settings in (LossSettings(), LossSettings(beta=0.04)):
        inputs, mask = loss_contract_inputs()
        norm = LossNorm.of(mask)
        loss, metrics = _call_loss(fn, inputs, norm, settings)
        (grad,) = torch.autograd.grad(loss, inputs.logprobs, allow_unused=True)
        if grad is None or not torch.isfinite(grad).all():
            raise ContractError("the loss has no finite gradient with respect to inputs.logprobs")
        if grad[mask == 0].abs().max() > 0:
            raise ContractError("padding tokens (mask 0) get a gradient")
        padded, _ = loss_contract_inputs(padding=-7.0)
        if not _close(_call_loss(fn, padded, norm, settings)[0], loss):
            raise ContractError("the values at padding tokens (mask 0) change the loss")
        _check_split(fn, inputs, norm, settings, loss, grad, metrics)


def _check_split(fn, inputs: LossInputs, norm: LossNorm, settings: LossSettings, loss, grad, metrics) -> None:
    total, grads, summed = 0.0, [], {}
    for rows in MICRO_BATCHES:
        part = LossInputs(*(None if t is None else (t.detach()[rows].requires_grad_(True) if t is inputs.logprobs
                                                     else t[rows]) for t in _fields(inputs)))
        part_loss, part_metrics = _call_loss(fn, part, norm, settings)
        grads.append(torch.autograd.grad(part_loss, part.logprobs, allow_unused=True)[0]
                     if part_loss.requires_grad else None)
        total = total + part_loss.detach()
        for key, value in part_metrics.items():
            summed[key] = summed.get(key, 0.0) + float(value)
    if any(g is None for g in grads) or not _close(torch.cat(grads), grad):
        raise ContractError("the gradient of a batch is not the sum of its micro-batches' (each called with the "
                            "whole batch's LossNorm)")
    if not _close(total, loss.detach()):
        raise ContractError(f"the loss of a batch ({float(loss):.6g}) is not the sum of its micro-batches' ({float(total):.6g})")
    for key, value in metrics.items():
        if key in summed and not _close(torch.tensor(summed[key]), torch.tensor(float(value))):
            raise ContractError(f"metric {key!r} of a batch is not the sum of its micro-batches'")


def _call_loss(fn, inputs, norm, settings):
    out = fn(inputs, norm, settings)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        raise ContractError(f"must return (loss, metrics dict), got {type(out).__name__}")
    loss, metrics = out
    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.is_floating_point()
            and torch.isfinite(loss)):
        raise ContractError(f"the loss must be a finite scalar tensor, got {loss!r}")
    for key, value in metrics.items():
        if not (isinstance(key, str) and isinstance(value, torch.Tensor) and value.numel() == 1):
            raise ContractError(f"metric {key!r} must be a one-element tensor, got {value!r}")
    return loss, metrics


def _fields(inputs: LossInputs) -> list:
    return [inputs.logprobs, inputs.mask, inputs.advantages, inputs.old_logprobs, inputs.ref_logprobs, inputs.entropy]


# ---- advantage estimators

def advantage_contract_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """(rewards, valid, correct, modes): a mixed, an all-correct, an all-wrong and a partly unscored group,
    two of each mode."""
    rewards = torch.tensor([[1.0, 0.0, 0.5, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.2, 1.0, 0.0, 0.7]],
                           dtype=torch.float64)
    valid = torch.ones_like(rewards, dtype=torch.bool)
    valid[3, 1] = valid[0, 2] = False
    return rewards, valid, rewards >= 1.0, [REASONING, NON_REASONING, NON_REASONING, REASONING]


def check_advantage(fn) -> None:
    _require_signature(fn, 1, '(rewards, valid=None, correct=None, modes=None, normalize="batch")')
    rewards, valid, correct, modes = advantage_contract_inputs()
    for normalize in NORMALIZE:
        if _call_advantage(fn, rewards, valid, correct, modes, normalize)[~valid].abs().max() > 0:
            raise ContractError(f"samples that are not valid (unscored) must get advantage 0 (normalize {normalize!r})")
    out = _call_advantage(fn, rewards, valid, correct, modes)
    everyone = torch.ones_like(valid)
    if not _close(_call_advantage(fn, rewards, None, correct, modes), _call_advantage(fn, rewards, everyone, correct, modes)):
        raise ContractError("valid=None must mean every sample is valid")
    prompts, samples = [2, 0, 3, 1], torch.tensor([3, 1, 0, 2])
    shuffle = lambda t: t[prompts][:, samples]  # noqa: E731
    if not _close(_call_advantage(fn, shuffle(rewards), shuffle(valid), shuffle(correct), [modes[i] for i in prompts]),
                  shuffle(out)):
        raise ContractError("the advantages depend on the order of the prompts or of the samples in a group")


def _call_advantage(fn, rewards, valid, correct, modes, normalize: str = "batch") -> torch.Tensor:
    out = fn(rewards, valid=valid, correct=correct, modes=modes, normalize=normalize)
    if not (isinstance(out, torch.Tensor) and out.shape == rewards.shape and out.is_floating_point()):
        raise ContractError(f"must return a float tensor of the rewards' shape {tuple(rewards.shape)}, got "
                            f"{getattr(out, 'shape', type(out).__name__)}")
    if not torch.isfinite(out).all():
        raise ContractError("advantages must be finite")
    return out


# ---- shared

def _require_signature(fn, positional: int, expected: str) -> None:
    try:
        keywords = {} if positional > 1 else {"valid": None, "correct": None, "modes": None, "normalize": "batch"}
        inspect.signature(fn).bind(*[None] * positional, **keywords)
    except TypeError as exc:
        raise ContractError(f"must take {expected}: {exc}") from None


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.detach().double(), b.detach().double()
    return a.shape == b.shape and bool(((a - b).abs() <= TOLERANCE * (1 + b.abs().max())).all())
