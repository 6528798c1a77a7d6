"""The learner on a real tiny Exaone4: packed log-probs, update direction, LoRA export, resume."""
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dualmode_rl.rl.batch import TrainingBatch
from dualmode_rl.rl.learner import Learner, LearnerConfig
from dualmode_rl.rl.micro_batches import build_micro_batch, plan_micro_batches, shard_for_rank
from dualmode_rl.rl.policy import LoraSettings
from dualmode_rl.rl.trl_inputs import trl_grpo_inputs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rl_fixtures import make_tiny_exaone, make_trl_trainer, random_batch  # noqa: E402
from tolerances import log_softmax_tolerance, logit_bound, tolerance  # noqa: E402

VOCAB = 64
HIDDEN = 32  # rl_fixtures.tiny_exaone_config's default

# The model runs in float64, so code paths that order the network's sums differently (layouts,
# micro-batches, checkpointing, TRL, a plain forward) agree to float64 rounding there. The learner
# still computes logits, log-probs, the loss and the LM head's gradient in float32 by design (fp32
# logits for any parameter dtype): the tolerances below are those of that float32 arithmetic.


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # sliding window 8 < longest sequence (21): packed local attention is exercised
    return make_tiny_exaone(tmp_path_factory.mktemp("learner") / "model", dtype=torch.float64)


def config(model_dir, **overrides) -> LearnerConfig:
    base = LearnerConfig(model_path=str(model_dir), lr=1e-2, beta=0.0, micro_batch_tokens=64, max_grad_norm=None,
                         dtype="float64")
    return replace(base, **overrides)


def sequences(batch: TrainingBatch) -> list[list[int]]:
    return [p + c for p, c in zip(batch.prompt_ids, batch.completion_ids)]


def logprob_tolerance(model, batch: TrainingBatch, temperature: float = 1.0) -> float:
    """One completion token's log-prob, the learner's float32 path against a float64 one."""
    return log_softmax_tolerance(torch.float32, HIDDEN, VOCAB, logit_bound(model, sequences(batch), temperature))


def sequence_tolerance(model, batch: TrainingBatch) -> float:
    """A completion's summed log-prob: each token within logprob_tolerance, plus the float32 sum."""
    longest = max(len(c) for c in batch.completion_ids)
    per_token = logprob_tolerance(model, batch)
    worst_sum = longest * (math.log(VOCAB) + 2 * logit_bound(model, sequences(batch)))  # |log p| <= log V + 2 max|z|
    return longest * per_token + tolerance(torch.float32, longest, worst_sum)


def sequence_logprobs(learner: Learner, batch: TrainingBatch) -> torch.Tensor:
    micro = build_micro_batch(batch.prompt_ids, batch.completion_ids, list(range(len(batch))))
    with torch.no_grad():
        return learner.policy.token_logprobs(micro)[0].sum(-1)


def unpacked_logprobs(model, prompt, completion) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0].double().log_softmax(-1)
    start = len(prompt) - 1
    return logits[start:start + len(completion)].gather(1, torch.tensor(completion)[:, None]).squeeze(1)


@pytest.mark.parametrize("layout", ["padded", "packed", "shared_prompt"])
def test_micro_batch_logprobs_equal_one_sequence_at_a_time_and_trl(model_dir, tmp_path, layout):
    learner = Learner(config(model_dir))
    batch = random_batch(3, 4, VOCAB, seed=1)
    tol = logprob_tolerance(learner.policy.hf_model, batch)
    order = sorted(range(len(batch)), key=lambda i: -len(batch.completion_ids[i]))  # rows != batch order
    micro = build_micro_batch(batch.prompt_ids, batch.completion_ids, order, layout)
    with torch.no_grad():
        ours, entropy = learner.policy.token_logprobs(micro)
    for row, i in enumerate(order):
        n = len(batch.completion_ids[i])
        expected = unpacked_logprobs(learner.policy.hf_model, batch.prompt_ids[i], batch.completion_ids[i])
        torch.testing.assert_close(ours[row, :n].double(), expected, rtol=0, atol=tol)
        assert (ours[row, n:] == 0).all() and (entropy[row, :n] > 0).all()
    ours, entropy = ours[torch.argsort(torch.tensor(order))], entropy[torch.argsort(torch.tensor(order))]

    # TRL's own padded, fused-LM-head log-prob path, on the float64 model ("auto": the saved dtype)
    trainer = make_trl_trainer(model_dir, tmp_path, model_init_kwargs={"dtype": "auto"})
    inputs = trl_grpo_inputs(batch, pad_id=2)
    input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        trl_lp, trl_entropy, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, attention, inputs["completion_ids"].shape[1], compute_entropy=True)
    mask = inputs["completion_mask"].bool()
    torch.testing.assert_close(ours[mask].double(), trl_lp[mask].double(), rtol=0, atol=tol)  # both float32 log-softmaxes
    # entropy = log-sum-exp - sum_v p_v z_v: VOCAB more terms, each logit below the bound
    entropy_tol = tol + tolerance(torch.float32, VOCAB, logit_bound(learner.policy.hf_model, sequences(batch)))
    torch.testing.assert_close(entropy[mask].double(), trl_entropy[mask].double(), rtol=0, atol=entropy_tol)


@pytest.mark.parametrize("layout", ["padded", "packed", "shared_prompt"])
def test_logprobs_are_of_each_modes_sampling_temperature(model_dir, layout):
    """The samples came from softmax(logits / T) of their mode: that is the distribution whose
    log-probs the loss (and the reference) must use, as TRL and verl do."""
    temperatures = {"reasoning": 0.6, "non_reasoning": 0.4}
    learner = Learner(config(model_dir, temperatures=temperatures, beta=0.05))
    batch = random_batch(4, 2, VOCAB, seed=5)
    micro = build_micro_batch(batch.prompt_ids, batch.completion_ids, list(range(len(batch))), layout)
    with torch.no_grad():
        ours, _ = learner.policy.token_logprobs(micro, temperature=learner._token_temperatures(batch.modes, micro))
    reference = learner.reference_logprobs(batch.prompt_ids, batch.completion_ids, batch.modes)
    tol = logprob_tolerance(learner.policy.hf_model, batch, temperature=min(temperatures.values()))
    for i, (prompt, completion) in enumerate(zip(batch.prompt_ids, batch.completion_ids)):
        with torch.no_grad():
            logits = learner.policy.hf_model(torch.tensor([prompt + completion])).logits[0].double()
        scaled = (logits / temperatures[batch.modes[i]]).log_softmax(-1)[len(prompt) - 1:len(prompt) - 1 + len(completion)]
        expected = scaled.gather(1, torch.tensor(completion)[:, None]).squeeze(1)
        torch.testing.assert_close(ours[i, :len(completion)].double(), expected, rtol=0, atol=tol)
        torch.testing.assert_close(torch.tensor(reference[i]).double(), expected, rtol=0, atol=tol)
    assert len(set(batch.modes)) == 2


def test_one_agapo_step_moves_logprobs_with_the_advantage_sign(model_dir):
    learner = Learner(config(model_dir, loss="agapo", lr=5e-3))
    prompt = [5, 9, 11]
    batch = TrainingBatch(prompt_ids=[prompt, prompt], completion_ids=[[20, 21, 22, 1], [30, 31, 1]],
                          advantages=[1.0, -1.0], group_ids=[0, 0], modes=["reasoning", "reasoning"])
    before = sequence_logprobs(learner, batch)
    # the loss sums the same 7 float32 log-probs (each within `per_token` of itself on another
    # micro-batch plan), weighted by +-1, in another order: |terms| sum to -(before[0] + before[1])
    per_token = logprob_tolerance(learner.policy.hf_model, batch)
    loss_tol = 7 * per_token + tolerance(torch.float32, 7 + 2, -before.sum().item())
    metrics = learner.step(batch)
    after = sequence_logprobs(learner, batch)
    assert after[0] > before[0] + 1e-3, (before, after)  # moves of lr-size, far above rounding
    assert after[1] < before[1] - 1e-3, (before, after)
    assert metrics["grad_norm"] > 0 and metrics["loss"] == pytest.approx(-(before[0] - before[1]).item() / 2, abs=loss_tol)


def test_micro_batching_and_gradient_checkpointing_do_not_change_the_update(model_dir):
    batch = random_batch(4, 4, VOCAB, seed=2)
    # The plans differ in float32 rounding only: log-probs, loss and the LM head's gradient reduce
    # over at most the batch's tokens, the vocabulary and the hidden size; with lr = 1 and adam_eps = 1
    # each Adam step moves a weight by less than 1, two steps.
    n_tokens = sum(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids))
    tol = tolerance(torch.float32, n_tokens + VOCAB + HIDDEN, magnitude=2.0)
    start = Learner(config(model_dir)).export_weights()
    weights = []
    for overrides in ({"micro_batch_tokens": 10_000}, {"micro_batch_tokens": 40, "layout": "packed"},
                      {"micro_batch_tokens": None, "micro_batch_size": 6, "layout": "shared_prompt"},
                      {"micro_batch_tokens": None, "micro_batch_size": 3, "gradient_checkpointing": True}):
        # adam_eps=1: the update is ~lr * gradient, so rounding in near-zero gradients is not amplified
        learner = Learner(config(model_dir, loss="agapo", beta=0.05, lr=1.0, adam_eps=1.0, **overrides))
        learner.step(batch)
        learner.step(batch)  # second step: KL against the reference is non-zero
        weights.append(learner.export_weights())
    assert max((weights[0][k] - start[k]).abs().max().item() for k in start) > 1000 * tol  # a real update
    for other in weights[1:]:
        for name, tensor in weights[0].items():
            torch.testing.assert_close(other[name], tensor, rtol=0, atol=tol)


def test_reference_logprobs_computed_ahead_give_the_same_steps(model_dir):
    """The asynchronous loop hands the learner the reference's log-probs computed on another thread
    while the previous step trained: the steps must be bitwise those of computing them in the step."""
    import threading

    batches = [random_batch(4, 4, VOCAB, seed=s) for s in (3, 4)]
    temperatures = {"reasoning": 0.6, "non_reasoning": 0.4}
    inline = Learner(config(model_dir, loss="agapo", beta=0.05, micro_batch_tokens=40, temperatures=temperatures))
    ahead = Learner(config(model_dir, loss="agapo", beta=0.05, micro_batch_tokens=40, temperatures=temperatures))
    metrics = [inline.step(b) for b in batches]
    refs = {}
    worker = threading.Thread(target=lambda: refs.setdefault(0, ahead.reference_logprobs(
        batches[0].prompt_ids, batches[0].completion_ids, batches[0].modes)))
    worker.start()
    worker.join()
    ahead_metrics = [ahead.step(replace(batches[0], ref_logprobs=refs[0]))]
    second_ref = ahead.reference_logprobs(batches[1].prompt_ids, batches[1].completion_ids, batches[1].modes)
    assert [len(r) for r in second_ref] == [len(c) for c in batches[1].completion_ids]
    ahead_metrics.append(ahead.step(replace(batches[1], ref_logprobs=second_ref)))
    drop = ("step_time_s",)
    assert [{k: v for k, v in m.items() if k not in drop} for m in ahead_metrics] == \
        [{k: v for k, v in m.items() if k not in drop} for m in metrics]
    a, b = inline.export_weights(), ahead.export_weights()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert Learner(config(model_dir, beta=0.0)).reference_logprobs(
        batches[0].prompt_ids, batches[0].completion_ids, batches[0].modes) is None
    with pytest.raises(ValueError, match="ref_logprobs"):
        inline.step(replace(batches[0], ref_logprobs=[r[:-1] for r in refs[0]]))


@pytest.mark.parametrize("loss", ["grpo", "dapo", "dr_grpo"])
def test_clipped_losses_run_through_the_learner(model_dir, loss):
    learner = Learner(config(model_dir, loss=loss, beta=0.04, steps_per_batch=2, lr=1e-3))
    metrics = learner.step(random_batch(2, 4, VOCAB, seed=3))
    assert learner.global_step == 2
    for key in ("loss", "kl", "entropy", "clip_frac", "grad_norm", "entropy/reasoning", "kl/non_reasoning"):
        assert key in metrics and metrics[key] == metrics[key], key


def with_sampler_logprobs(learner: Learner, batch: TrainingBatch, shift: float = 0.0) -> TrainingBatch:
    """The batch with rollout_logprobs = the learner's own log-probs of it, plus `shift`."""
    micro = build_micro_batch(batch.prompt_ids, batch.completion_ids, list(range(len(batch))))
    with torch.no_grad():
        lp = learner.policy.token_logprobs(micro, temperature=learner._token_temperatures(batch.modes, micro))[0]
    return replace(batch, rollout_logprobs=[(lp[i, :len(c)] + shift).tolist() for i, c in enumerate(batch.completion_ids)])


def test_off_policy_correction_settings(model_dir):
    with pytest.raises(ValueError, match="off_policy_correction"):
        config(model_dir, loss="agapo", steps_per_batch=2)
    learner = Learner(config(model_dir, loss="agapo", steps_per_batch=2, off_policy_correction="mis", lr=1e-2))
    batch = random_batch(2, 4, VOCAB, seed=4)
    with pytest.raises(ValueError, match="rollout_logprobs is None"):
        learner.step(batch)
    learner.step(with_sampler_logprobs(learner, batch))
    assert learner.global_step == 2
    for bad, match in ((dict(off_policy_correction="is"), "off_policy_correction"),
                       (dict(off_policy_cap=1.0), "off_policy_cap"), (dict(off_policy_level="prefix"), "off_policy_level"),
                       (dict(loss="ppo"), "unknown 'ppo'")):
        with pytest.raises(ValueError, match=match):
            config(model_dir, **bad)


def test_sampler_gap_metrics_per_mode(model_dir):
    """mismatch/logprob_abs is the mean |learner - sampler| log-prob; the ratios are the sequences'."""
    temperatures = {"reasoning": 0.6, "non_reasoning": 0.4}
    learner = Learner(config(model_dir, temperatures=temperatures, off_policy_correction="tis", lr=1e-3))
    batch = random_batch(2, 2, VOCAB, seed=10, completion_len=(2, 4))
    # a sampler 0.05 nats less sure of every token: sequence ratios exp(0.05 * length)
    metrics = learner.step(with_sampler_logprobs(learner, batch, shift=-0.05))
    ratios = {mode: [math.exp(0.05 * len(c)) for c, m in zip(batch.completion_ids, batch.modes) if m == mode]
              for mode in temperatures}
    tokens = {mode: [len(c) for c, m in zip(batch.completion_ids, batch.modes) if m == mode] for mode in temperatures}
    # fp32 log-probs of magnitude ~4 and their difference: about 1e-6 of rounding
    for mode in temperatures:
        assert metrics[f"mismatch/logprob_abs/{mode}"] == pytest.approx(0.05, abs=1e-5)
        mean = sum(r * n for r, n in zip(ratios[mode], tokens[mode])) / sum(tokens[mode])
        assert metrics[f"off_policy/ratio_mean/{mode}"] == pytest.approx(mean, rel=1e-4)
        assert metrics[f"off_policy/ratio_max/{mode}"] == pytest.approx(max(ratios[mode]), rel=1e-4)
        assert metrics[f"off_policy/capped_frac/{mode}"] == 0.0
    assert metrics["mismatch/logprob_abs"] == pytest.approx(0.05, abs=1e-5)
    assert metrics["off_policy/ratio_max"] == pytest.approx(max(max(r) for r in ratios.values()), rel=1e-4)


def test_clipped_loss_ratio_is_against_the_sampler_when_correcting(model_dir):
    """A GRPO batch the sampler found far less likely (log-probs 8 nats lower) is clipped when the
    correction is on; without it, the ratio is against the learner's own pass and nothing clips."""
    batch = random_batch(2, 4, VOCAB, seed=11)
    batch = replace(batch, advantages=[abs(a) for a in batch.advantages])
    clip_frac = {}
    for correction in ("tis", "none"):
        learner = Learner(config(model_dir, loss="grpo", off_policy_correction=correction))
        clip_frac[correction] = learner.step(with_sampler_logprobs(learner, batch, shift=-8.0))["clip_frac"]
    assert clip_frac == {"tis": pytest.approx(1.0), "none": 0.0}


def test_bad_batches_are_named(model_dir):
    learner = Learner(config(model_dir))
    good = random_batch(1, 2, VOCAB)
    with pytest.raises(ValueError, match=r"advantages has 1 rows"):
        learner.step(replace(good, advantages=[0.5]))
    with pytest.raises(ValueError, match=r"prompt_ids\[1\] is empty"):
        learner.step(replace(good, prompt_ids=[good.prompt_ids[0], []]))
    with pytest.raises(ValueError, match=r"advantages\[0\] = nan"):
        learner.step(replace(good, advantages=[float("nan"), 0.0]))


def test_lora_merged_export_matches_the_peft_model(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    learner = Learner(config(model_dir, lora=LoraSettings(r=4, alpha=8), beta=0.1, lr=2e-2))
    batch = random_batch(2, 4, VOCAB, seed=5)
    base_logprobs = sequence_logprobs(learner, batch)
    learner.step(batch)
    learner.step(batch)
    peft_logprobs = sequence_logprobs(learner, batch)

    # the reference is the base model: adapters disabled
    micro = build_micro_batch(batch.prompt_ids, batch.completion_ids, list(range(len(batch))))
    ref = learner.policy.token_logprobs(micro, reference=True)[0].sum(-1)
    tol = sequence_tolerance(learner.policy.hf_model, batch)
    assert (peft_logprobs - base_logprobs).abs().max() > 10 * tol  # the adapters did move the policy
    torch.testing.assert_close(ref, base_logprobs, rtol=0, atol=tol)

    merged = learner.export_weights(merged=True)
    assert not any("lora" in k or "base_layer" in k for k in merged)
    fresh = AutoModelForCausalLM.from_pretrained(str(model_dir))
    fresh.load_state_dict(merged, strict=True)
    learner.save_pretrained(tmp_path / "policy")
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy"))
    assert (tmp_path / "policy" / "model.safetensors").is_file()
    assert (tmp_path / "policy" / "tokenizer.json").is_file()
    for model in (fresh, reloaded):
        for i in range(len(batch)):
            expected = peft_logprobs[i].double()
            got = unpacked_logprobs(model, batch.prompt_ids[i], batch.completion_ids[i]).sum()
            torch.testing.assert_close(got, expected, rtol=0, atol=tol)

    adapter = learner.export_weights(merged=False)
    assert adapter and all("lora_" in k for k in adapter)


def test_resume_from_training_state_continues_exactly(model_dir, tmp_path):
    batch_a, batch_b = random_batch(2, 4, VOCAB, seed=6), random_batch(2, 4, VOCAB, seed=7)
    settings = dict(loss="agapo", beta=0.05, lr=1e-2, lr_schedule="cosine", warmup_steps=1, total_steps=10)
    learner = Learner(config(model_dir, **settings))
    learner.step(batch_a)
    learner.save_pretrained(tmp_path / "policy")
    learner.save_training_state(tmp_path / "state")
    continued = learner.step(batch_b)

    resumed = Learner(config(model_dir, **settings, model_path=str(tmp_path / "policy"),
                             ref_model_path=str(model_dir)))
    resumed.load_training_state(tmp_path / "state")
    assert resumed.global_step == 1
    again = resumed.step(batch_b)
    # the same arithmetic on the same values in the same order: bitwise equal
    for key in ("loss", "kl", "grad_norm", "lr"):
        assert again[key] == continued[key], key
    for name, tensor in learner.export_weights().items():
        assert torch.equal(resumed.export_weights()[name], tensor), name


def test_lora_resume_restores_adapters(model_dir, tmp_path):
    lora = LoraSettings(r=4, alpha=8)
    learner = Learner(config(model_dir, lora=lora))
    batch = random_batch(2, 4, VOCAB, seed=8)
    learner.step(batch)
    learner.save_training_state(tmp_path)
    resumed = Learner(config(model_dir, lora=lora, seed=123))
    resumed.load_training_state(tmp_path)
    assert torch.equal(sequence_logprobs(resumed, batch), sequence_logprobs(learner, batch))  # same weights, same path


def test_planning_helpers():
    lengths = [5, 9, 3, 7, 2]
    everything = [0, 1, 2, 3, 4]
    assert plan_micro_batches(lengths, everything, 12, None, "packed") == [[0], [1, 2], [3, 4]]
    assert plan_micro_batches(lengths, everything, None, 2, "packed") == [[0, 1], [2, 3], [4]]
    # padded: longest first, cost = rows x longest row
    assert plan_micro_batches(lengths, everything, 14, None, "padded") == [[1], [3, 0], [2, 4]]
    shards = [shard_for_rank(lengths, 2, r) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == [0, 1, 2, 3, 4]
    assert abs(sum(lengths[i] for i in shards[0]) - sum(lengths[i] for i in shards[1])) <= 2


def test_rl_imports_without_ray_and_vllm():
    code = ("import sys; sys.modules['ray'] = None; sys.modules['vllm'] = None; "
            "import rl.learner, rl.losses, rl.advantages, rl.micro_batches, rl.policy, rl.trl_inputs")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


@pytest.mark.parametrize("dtypes", [{"autocast_dtype": "bfloat16"}, {"dtype": "bfloat16"}])
def test_bf16_steps_run(model_dir, dtypes):
    """The mixed-precision (fp32 weights + bf16 autocast) and pure-bf16 paths the GPU benchmark uses."""
    learner = Learner(config(model_dir, loss="agapo", beta=0.05, **dtypes))
    start = {k: v.clone() for k, v in learner.export_weights().items()}
    metrics = learner.step(random_batch(2, 4, VOCAB, seed=9))
    assert all(value == value for value in metrics.values())
    assert any((learner.export_weights()[k].float() - v.float()).abs().max() > 0 for k, v in start.items())


def test_lm_head_of_a_bf16_model_runs_in_fp32(model_dir):
    """The log-softmax input is not rounded to bf16: log-probs match an fp64 head on the bf16 model's
    own hidden states and weights. The fp32 product of 32 terms is good to ~1e-6 relative (logits of
    magnitude ~10: 1e-5), so 1e-4; bf16 logits keep 8 significant bits, ~0.02 at that magnitude."""
    batch = random_batch(2, 4, VOCAB, seed=12)
    micro = build_micro_batch(batch.prompt_ids, batch.completion_ids, list(range(len(batch))))
    errors = {}
    for fp32 in (True, False):
        learner = Learner(config(model_dir, dtype="bfloat16", fp32_lm_head=fp32))
        model = learner.policy.hf_model
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(30.0)  # trained-model logit scale, not random-init ~0
            ours = learner.policy.token_logprobs(micro)[0]
            hidden = model.base_model(input_ids=micro.input_ids).last_hidden_state.reshape(-1, 32)
            logits = hidden[micro.hidden_index].double() @ model.get_output_embeddings().weight.double().t()
        assert logits.abs().max() > 5
        exact = micro.to_padded(logits.log_softmax(-1).gather(1, micro.labels[:, None]).squeeze(1))
        errors[fp32] = (ours.double() - exact).abs().max().item()
    assert errors[True] < 1e-4 < 1e-3 < errors[False], errors
