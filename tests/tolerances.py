"""Tolerances for comparing two floating-point computations of one quantity, from the arithmetic.

A sum (or dot product) of n terms computed in any order in a precision with unit roundoff
u = eps / 2 is within gamma_n * sum|term| of the exact value, gamma_n = n u / (1 - n u) (Higham,
"Accuracy and Stability of Numerical Algorithms", 2nd ed., section 3.1 and eq. 4.4). Two code
paths that add the same terms in different orders are therefore within 2 gamma_n sum|term| of each
other. A computation that chains several reductions (the layers of a network, a log-softmax after
a matrix product) counts, to first order, the sum of their lengths as n. Element-wise operations
(exp, log, division) count as one term each.

These are worst-case bounds: they hold on any machine, any BLAS, any thread count. They stay far
below the size of a real bug (a missing term, a sign error, a wrong scale), which each test that
uses them states or checks.
"""
from __future__ import annotations

import math

import torch


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def gamma(dtype: torch.dtype, n_terms: int) -> float:
    nu = n_terms * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"{n_terms} terms exhaust {dtype}'s precision")
    return nu / (1 - nu)


def tolerance(dtype: torch.dtype, n_terms: int, magnitude: float = 1.0) -> float:
    """The largest difference between two evaluations, in `dtype`, of a reduction of `n_terms` terms
    whose absolute values sum to at most `magnitude`."""
    return 2 * gamma(dtype, n_terms) * magnitude


def log_softmax_tolerance(dtype: torch.dtype, n_dot: int, vocab: int, logit_bound: float) -> float:
    """Two evaluations of a log-probability log softmax(z)_i in `dtype`, where each logit z is a dot
    product of `n_dot` terms whose absolute values sum to at most `logit_bound`: the dot product, the
    log-sum-exp over `vocab` logits (whose value is at most logit_bound + log vocab) and the
    subtraction."""
    return tolerance(dtype, n_dot + vocab + 3, 2 * logit_bound + math.log(vocab))


def probable_tolerance(dtype: torch.dtype, n_terms: int, magnitude: float = 1.0, lam: float = 7.0) -> float:
    """Like `tolerance`, for long chains of reductions (a whole network), where the worst case, every
    rounding in the same direction, is vacuous. Modelling roundings as independent zero-mean errors,
    Higham and Mary (SIAM J. Sci. Comput. 41(5), 2019, theorem 3.1) bound the error by
    lam sqrt(n) u sum|terms|, except with probability below 2 n exp(-lam^2 / 2): 1e-7 for lam = 7
    and n = 4000."""
    return 2 * lam * math.sqrt(n_terms) * unit_roundoff(dtype) * magnitude


def decoder_terms(config, seq_len: int) -> int:
    """The reductions chained from the input to one log-prob of a decoder-only transformer: per layer
    two RMS norms, the q/k/v projections, q/k norms and scores (head size), the attention softmax and
    weighted sum (sequence length), the output projection and the MLP (hidden, then intermediate size);
    then the final norm, the LM head and the log-softmax over the vocabulary."""
    h, head = config.hidden_size, getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_layer = 5 * h + 2 * head + 2 * seq_len + config.intermediate_size
    return config.num_hidden_layers * per_layer + 2 * h + config.vocab_size


@torch.no_grad()
def logit_bound(model, sequences: list[list[int]], temperature: float = 1.0) -> float:
    """The largest sum of |terms| of a logit, sum_k |h_k W_vk| / T, over the sequences' positions (it
    bounds |logit| too): the size a log-prob's rounding scales with."""
    weight = model.get_output_embeddings().weight.abs()
    bound = 0.0
    for ids in sequences:
        hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        bound = max(bound, (hidden.abs() @ weight.t().to(hidden.dtype)).max().item())
    return bound / temperature


def network_logprob_tolerance(model, sequences: list[list[int]], temperature: float = 1.0) -> float:
    """Two float32 implementations of `model` (say vLLM's CPU kernels and transformers) computing the
    log-probs of `sequences`: the probable bound over the decoder's chain of reductions, relative to
    the logit bound (RMS norms bring activations back to unit size at every layer)."""
    config = model.config.get_text_config()
    n_terms = decoder_terms(config, max(len(s) for s in sequences))
    return probable_tolerance(torch.float32, n_terms, 2 * logit_bound(model, sequences, temperature) + math.log(config.vocab_size))
