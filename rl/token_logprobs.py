"""Log-probability and entropy of chosen tokens from hidden states, chunked over tokens.

Never materialises the `[tokens, vocab]` fp32 logits of a whole micro-batch: the LM head and
log-softmax run one chunk of tokens at a time, forward and again in backward (recompute),
keeping only the chosen token's log-prob and the entropy.

With `fp32` (the default) the head's product and the log-softmax run in fp32 even when the model
runs in bf16, as TRL's `cast_lm_head_to_fp32`: bf16 logits are rounded to 8 significant bits, up
to a few hundredths of a nat per token at logits of magnitude 10-20.
"""
from __future__ import annotations

import torch

DEFAULT_CHUNK_TOKENS = 1024


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (hidden @ weight.t()).float()


class _ChosenTokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_tokens):
        n = hidden.shape[0]
        logprobs = torch.empty(n, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty(n, dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            compute_weight = weight.to(hidden.dtype)  # once, not per chunk (fp32 master weights under autocast)
            for start in range(0, n, chunk_tokens):
                end = min(start + chunk_tokens, n)
                logits = _chunk_logits(hidden[start:end], compute_weight)
                log_z = logits.logsumexp(-1)
                logprobs[start:end] = logits.gather(1, labels[start:end, None]).squeeze(1) - log_z
                probs = torch.exp(logits - log_z[:, None])
                entropy[start:end] = log_z - (probs * logits).sum(-1)
        ctx.save_for_backward(hidden, weight, labels)
        ctx.chunk_tokens = chunk_tokens
        ctx.mark_non_differentiable(entropy)  # entropy is reported, never optimised here
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, _grad_entropy):
        hidden, weight, labels = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        with torch.autocast(hidden.device.type, enabled=False):
            compute_weight = weight.to(hidden.dtype)
            for start in range(0, hidden.shape[0], ctx.chunk_tokens):
                end = min(start + ctx.chunk_tokens, hidden.shape[0])
                chunk = hidden[start:end]
                logits = _chunk_logits(chunk, compute_weight)
                g = grad_logprobs[start:end].float()
                # d logp(label) / d logits = onehot(label) - softmax
                grad_logits = torch.softmax(logits, dim=-1).mul_(-g[:, None])
                grad_logits[torch.arange(end - start, device=chunk.device), labels[start:end]] += g
                grad_logits = grad_logits.to(chunk.dtype)
                if grad_hidden is not None:
                    grad_hidden[start:end] = grad_logits @ compute_weight
                if grad_weight is not None:
                    grad_weight += (grad_logits.t() @ chunk).float()
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None


def chosen_token_logprobs(hidden: torch.Tensor, lm_head_weight: torch.Tensor, labels: torch.Tensor,
                          chunk_tokens: int = DEFAULT_CHUNK_TOKENS, temperature: torch.Tensor | None = None,
                          fp32: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`hidden` [N, H] (state before each label), `labels` [N] -> (logprob [N] fp32, entropy [N] fp32)
    of softmax(logits / temperature) (`temperature` [N], None: 1).

    Gradients flow to `hidden` and `lm_head_weight` through the log-prob only.
    """
    if hidden.dim() != 2 or labels.dim() != 1 or hidden.shape[0] != labels.shape[0]:
        raise ValueError(f"chosen_token_logprobs: hidden [N, H] and labels [N] expected, got {tuple(hidden.shape)}, {tuple(labels.shape)}")
    if fp32:
        hidden = hidden.float()  # the weight follows hidden's dtype in the kernel
    if temperature is not None:  # logits / T == (hidden / T) @ W.T: the LM head has no bias
        hidden = hidden / temperature.to(hidden.dtype)[:, None]
    return _ChosenTokenLogprobs.apply(hidden, lm_head_weight, labels, chunk_tokens)
