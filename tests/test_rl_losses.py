"""Policy losses: exact sequence-KL gradient by enumeration, equality with TRL's GRPOTrainer loss,
and the chunked log-prob kernel."""
import itertools
import math
import sys
from pathlib import Path

import pytest
import torch
from tolerances import log_softmax_tolerance, tolerance, unit_roundoff

from dualmode_rl.rl.losses import LOSSES, LossInputs, LossNorm, LossSettings, agapo_loss, get_loss
from dualmode_rl.rl.token_logprobs import chosen_token_logprobs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rl_fixtures import make_tiny_exaone, make_trl_trainer  # noqa: E402

V, T = 3, 3


class TabularPolicy(torch.nn.Module):
    """Autoregressive policy over V tokens and T steps: one free logit vector per prefix."""

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.logits = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(V ** t, V, generator=g, dtype=torch.float64)) for t in range(T)])

    def token_logprobs(self, seq: tuple[int, ...]) -> torch.Tensor:
        out, prefix = [], 0
        for t, token in enumerate(seq):
            out.append(torch.log_softmax(self.logits[t][prefix], -1)[token])
            prefix = prefix * V + token
        return torch.stack(out)


SEQUENCES = list(itertools.product(range(V), repeat=T))


def _grad(module, scalar):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(scalar, list(module.parameters()))])


def _exact_kl_gradient(policy, reference):
    kl = 0.0
    for seq in SEQUENCES:
        lp = policy.token_logprobs(seq).sum()
        kl = kl + lp.exp() * (lp - reference.token_logprobs(seq).detach().sum())
    return _grad(policy, kl)


def _on_policy_expectation(policy, reference, per_sequence_loss):
    """sum over all sequences o of pi_theta(o) (held constant) * loss(o): the on-policy expectation."""
    total = 0.0
    for seq in SEQUENCES:
        lp = policy.token_logprobs(seq)
        ref = reference.token_logprobs(seq).detach()
        total = total + lp.sum().exp().detach() * per_sequence_loss(lp[None], ref[None])
    return _grad(policy, total)


def test_agapo_sequence_kl_gradient_equals_exact_kl_gradient_by_enumeration():
    policy, reference = TabularPolicy(0), TabularPolicy(1)
    exact = _exact_kl_gradient(policy, reference)
    settings = LossSettings(beta=1.0)

    def agapo_kl(lp, ref):
        inputs = LossInputs(logprobs=lp, mask=torch.ones_like(lp), advantages=torch.zeros(1, dtype=lp.dtype),
                            ref_logprobs=ref)
        return agapo_loss(inputs, LossNorm(1, T, T), settings)[0]

    estimated = _on_policy_expectation(policy, reference, agapo_kl)
    assert exact.abs().max() > 1e-2
    # float64 sums over the 27 sequences of T = 3 log-softmaxes over V = 3 (~25 rounded operations
    # each); one sequence's gradient is at most 2 T^2 max|log-ratio| (cumulative log-ratio times the
    # gradient of a log-softmax, whose absolute values sum to <= 2)
    log_ratio = max((policy.token_logprobs(s) - reference.token_logprobs(s)).abs().max().item() for s in SEQUENCES)
    tol = tolerance(torch.float64, n_terms=25 * len(SEQUENCES), magnitude=2 * T ** 2 * log_ratio)
    torch.testing.assert_close(estimated, exact, rtol=0, atol=tol)

    # the per-token KL penalty (no cumulative future log-ratio) is not that gradient: the test can fail
    naive = _on_policy_expectation(policy, reference, lambda lp, ref: (lp - ref).sum())
    assert (naive - exact).abs().max() > 1e-2


def test_agapo_policy_gradient_term_is_advantage_times_sequence_logprob():
    f64 = dict(dtype=torch.float64)
    lp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -0.5]], **f64, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], **f64)
    adv = torch.tensor([2.0, -1.0], **f64)
    norm = LossNorm.of(mask)
    loss, metrics = agapo_loss(LossInputs(lp, mask, adv), norm, LossSettings(beta=0.0))
    # -(2 * (-3) + (-1) * (-1.5)) / 2 sequences: 5 products |A lp| summing to 7.5, a sum, a division
    assert loss.item() == pytest.approx(-(2 * -3.0 + -1 * -1.5) / 2, abs=tolerance(torch.float64, 8, 7.5))
    (grad,) = torch.autograd.grad(loss, lp)
    torch.testing.assert_close(grad, -adv[:, None] * mask / 2, rtol=0, atol=tolerance(torch.float64, 2, 1.0))
    token_mean, _ = agapo_loss(LossInputs(lp, mask, adv), norm, LossSettings(loss_agg="token_mean"))
    assert token_mean.item() == pytest.approx(-(2 * -3.0 + -1 * -1.5) / 5, abs=tolerance(torch.float64, 8, 7.5))


def _sampler_near(policy, seed: int, scale: float) -> TabularPolicy:
    """A behaviour policy whose logits are the policy's plus `scale` times Gaussian noise."""
    sampler = TabularPolicy(seed)
    with torch.no_grad():
        for noise, logits in zip(sampler.logits, policy.logits):
            noise.mul_(scale).add_(logits)
    return sampler


def _exact_objective_gradient(policy, reference, advantage, beta):
    """grad of sum_o pi(o) * (-A(o)) + beta * KL(pi || pi_ref): what AGAPO's loss estimates."""
    total = 0.0
    for seq in SEQUENCES:
        lp = policy.token_logprobs(seq).sum()
        total = total + lp.exp() * (-advantage[seq] + beta * (lp - reference.token_logprobs(seq).detach().sum()))
    return _grad(policy, total)


def _expectation_under_sampler(policy, sampler, reference, advantage, settings):
    """sum over all sequences o of pi_sampler(o) * corrected loss(o), old_logprobs = the sampler's."""
    total = 0.0
    for seq in SEQUENCES:
        lp = policy.token_logprobs(seq)[None]
        old = sampler.token_logprobs(seq).detach()[None]
        inputs = LossInputs(lp, torch.ones_like(lp), advantage[seq].reshape(1), old_logprobs=old,
                            ref_logprobs=reference.token_logprobs(seq).detach()[None])
        total = total + old.sum().exp() * agapo_loss(inputs, LossNorm(1, T, T), settings)[0]
    return _grad(policy, total)


@pytest.mark.parametrize("correction", ["tis", "mis"])
def test_corrected_agapo_gradient_under_the_sampler_equals_the_exact_gradient_by_enumeration(correction):
    """Samples drawn from another policy (the sampler), weighted by the correction, give in
    expectation the exact gradient of the learner's objective (policy term and sequence KL),
    whenever no weight reaches the cap."""
    policy, reference = TabularPolicy(0), TabularPolicy(1)
    sampler = _sampler_near(policy, seed=2, scale=0.1)
    advantage = dict(zip(SEQUENCES, torch.randn(len(SEQUENCES), generator=torch.Generator().manual_seed(3),
                                                dtype=torch.float64)))
    beta, cap = 0.5, 2.0
    exact = _exact_objective_gradient(policy, reference, advantage, beta)
    log_ratios = torch.stack([policy.token_logprobs(s).detach() - sampler.token_logprobs(s).detach() for s in SEQUENCES])
    assert log_ratios.sum(-1).abs().max() < math.log(cap)  # below the cap: every weight is the plain ratio
    assert log_ratios.sum(-1).abs().max() > 0.05  # yet far enough off-policy to matter

    def expected(**settings):
        return _expectation_under_sampler(policy, sampler, reference, advantage,
                                          LossSettings(beta=beta, off_policy_cap=cap, **settings))

    # float64 sums of 27 products of exact identities: agreement to rounding, far below 1e-9
    torch.testing.assert_close(expected(off_policy_correction=correction), exact, rtol=0, atol=1e-9)
    # the test can fail: uncorrected samples, or weights of each token's own ratio, miss the exact gradient
    assert (expected(off_policy_correction="none") - exact).abs().max() > 1e-2
    assert (expected(off_policy_correction=correction, off_policy_level="token") - exact).abs().max() > 1e-3


def test_truncated_and_masked_importance_weights_by_hand():
    lp = torch.log(torch.tensor([[0.5, 0.5]])).requires_grad_()
    old = torch.log(torch.tensor([[0.1, 0.4]]))  # token ratios 5 and 1.25, sequence ratio 6.25
    expected = {("tis", "token"): [2.0, 1.25], ("mis", "token"): [0.0, 1.25],
                ("tis", "sequence"): [2.0, 2.0], ("mis", "sequence"): [0.0, 0.0]}
    for (correction, level), weights in expected.items():
        settings = LossSettings(off_policy_correction=correction, off_policy_cap=2.0, off_policy_level=level)
        loss, _ = agapo_loss(LossInputs(lp, torch.ones(1, 2), torch.tensor([1.0]), old_logprobs=old),
                             LossNorm(1, 2, 2), settings)
        (grad,) = torch.autograd.grad(loss, lp)
        torch.testing.assert_close(grad, -torch.tensor([weights]))
    with pytest.raises(ValueError, match="old_logprobs"):
        agapo_loss(LossInputs(lp, torch.ones(1, 2), torch.tensor([1.0])), LossNorm(1, 2, 2),
                   LossSettings(off_policy_correction="tis"))


def test_clipped_loss_ratio_is_against_the_sampler_and_mis_drops_tokens():
    lp = torch.full((2, 3), -1.0, requires_grad=True)
    sampler = torch.full((2, 3), -9.0)  # the sampler found these tokens far less likely
    mask, adv = torch.ones(2, 3), torch.tensor([1.0, -1.0])
    inputs = LossInputs(lp, mask, adv, old_logprobs=sampler)
    _, metrics = get_loss("grpo")(inputs, LossNorm.of(mask), LossSettings(off_policy_correction="tis"))
    assert metrics["clip_frac"].item() == pytest.approx(0.5)  # the positive-advantage row is clipped
    loss, _ = get_loss("grpo")(inputs, LossNorm.of(mask), LossSettings(off_policy_correction="mis"))
    assert loss.item() == 0.0  # every ratio is e^8 > cap: all tokens dropped


# ---- TRL equality ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trl_model_dir(tmp_path_factory):
    return make_tiny_exaone(tmp_path_factory.mktemp("trl") / "model")


def _random_loss_batch(seed=0, n=6, t=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).float()
    lp = -3 * torch.rand(n, t, generator=g) * mask
    old = (lp + 0.4 * torch.randn(n, t, generator=g)) * mask
    ref = (lp + 0.3 * torch.randn(n, t, generator=g)) * mask
    entropy = torch.rand(n, t, generator=g) * mask
    adv = torch.randn(n, generator=g)
    return lp, old, ref, entropy, mask, adv


@pytest.mark.parametrize("loss_type,beta", [("grpo", 0.04), ("grpo", 0.0), ("dapo", 0.04), ("dapo", 0.0),
                                            ("dr_grpo", 0.04)])
def test_clipped_losses_equal_trl_grpo_trainer(trl_model_dir, tmp_path, loss_type, beta):
    max_completion_length = 9
    # DAPO's clip-higher: our default epsilon_high is the paper's 0.28; TRL needs it spelled out
    clip_higher = {"epsilon_high": 0.28} if loss_type == "dapo" else {}
    trainer = make_trl_trainer(trl_model_dir, tmp_path, loss_type=loss_type, beta=beta,
                               max_completion_length=max_completion_length, **clip_higher)
    # float64 through both loss implementations (they keep the inputs' dtype)
    lp, old, ref, entropy, mask, adv = (x.double() for x in _random_loss_batch())
    n, t = mask.shape

    trl_lp = lp.clone().requires_grad_()
    # feed identical per-token log-probs: TRL's loss code runs unchanged from here on
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (trl_lp, entropy, None)
    inputs = {"prompt_ids": torch.full((n, 2), 3), "prompt_mask": torch.ones(n, 2, dtype=torch.long),
              "completion_ids": torch.full((n, t), 4), "completion_mask": mask.long(), "advantages": adv,
              "old_per_token_logps": old, "num_items_in_batch": mask.sum()}
    if beta:
        inputs["ref_per_token_logps"] = ref
    trl_loss = trainer._compute_loss(trainer.model, inputs)
    (trl_grad,) = torch.autograd.grad(trl_loss, trl_lp)

    our_lp = lp.clone().requires_grad_()
    ours, metrics = get_loss(loss_type)(
        LossInputs(our_lp, mask, adv, old_logprobs=old, ref_logprobs=ref if beta else None, entropy=entropy),
        LossNorm.of(mask, max_completion_length), LossSettings(beta=beta))
    (our_grad,) = torch.autograd.grad(ours, our_lp)

    # Each token's term takes ~8 rounded operations (ratio, clip, min, product, the KL estimate), then
    # one sum over the tokens and a division by a normaliser >= 1; |term| <= |A| max-ratio + beta KL.
    per_token = adv.abs().max() * (lp - old).exp().max() + beta * ((ref - lp).exp() + (ref - lp).abs() + 1).max()
    n_terms = int(mask.sum()) + 10
    tol = tolerance(torch.float64, n_terms, per_token.item() * mask.sum().item())
    torch.testing.assert_close(ours, trl_loss, rtol=0, atol=tol)
    torch.testing.assert_close(our_grad, trl_grad, rtol=0, atol=tolerance(torch.float64, 10, per_token.item()))
    logged = trainer._metrics["train"]
    # TRL's clipped fraction goes through float32 (a count over a count: two roundings of a value <= 1);
    # one token counted wrongly moves it by 1 / mask.sum() > 0.02
    assert metrics["clip_frac"].item() == pytest.approx(logged["clip_ratio/region_mean"][-1],
                                                        abs=tolerance(torch.float32, 2, 1.0))
    assert metrics["clip_frac"].item() > 0  # the batch is off-policy enough to clip
    # token means of entropies in [0, 1) and of KL estimates (<= the per-token bound)
    assert metrics["entropy"].item() == pytest.approx(logged["entropy"][-1], abs=tolerance(torch.float64, n_terms, mask.sum().item()))
    if beta:
        assert metrics["kl"].item() == pytest.approx(logged["kl"][-1], abs=tol)


def test_loss_registry():
    assert set(LOSSES) == {"agapo", "grpo", "dapo", "dr_grpo"}
    with pytest.raises(KeyError, match="unknown policy loss 'ppo'"):
        get_loss("ppo")


# ---- chunked log-probs ------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [3, 1024])
def test_chunked_logprobs_value_and_gradient_match_full_log_softmax(chunk):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 5, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(7, 5, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, 7, (10,), generator=g)
    upstream = torch.randn(10, dtype=torch.float64, generator=g)

    lp, entropy = chosen_token_logprobs(hidden, weight, labels, chunk)
    grads = torch.autograd.grad((lp * upstream).sum(), [hidden, weight])

    full = torch.log_softmax(hidden @ weight.t(), -1)
    expected_lp = full.gather(1, labels[:, None]).squeeze(1)
    expected_grads = torch.autograd.grad((expected_lp * upstream).sum(), [hidden, weight])
    # The kernel computes logits, log-sum-exp and softmax in float32 whatever the input dtype (fp32
    # logits for bf16 models); the reference is float64. `logit` bounds the sum of |terms| of a logit.
    (n_tokens, h), v = hidden.shape, weight.shape[0]
    logit = (hidden.abs() @ weight.abs().t()).max().item()
    lp_tol = log_softmax_tolerance(torch.float32, h, v, logit)
    torch.testing.assert_close(lp.double(), expected_lp, rtol=0, atol=lp_tol)
    # entropy = log-sum-exp - sum_v p_v z_v: V more terms of size <= logit
    torch.testing.assert_close(entropy.double(), -(full.exp() * full).sum(-1), rtol=0,
                               atol=lp_tol + tolerance(torch.float32, v, logit))
    # d logp / d z = onehot - softmax: every softmax entry is off by its relative error (<= lp_tol / 2,
    # the error of its log) and upstream is rounded to float32, so summed over V the error is at most
    # |upstream| (lp_tol / 2 + 2u). Then a float64 product with W (over V) gives d hidden; d W is a
    # product with hidden over the tokens, accumulated in float32 across chunks.
    g = upstream.abs().max().item()
    dz_error = g * (lp_tol / 2 + 2 * unit_roundoff(torch.float32))
    column = hidden.abs().sum(0).max().item()
    grad_tols = [dz_error * weight.abs().max().item(),
                 dz_error * column + tolerance(torch.float32, n_tokens, 2 * g * column)]
    for ours, theirs, tol in zip(grads, expected_grads, grad_tols):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=tol)
