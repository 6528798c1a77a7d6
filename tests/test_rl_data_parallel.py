"""The learner group (Ray actors, one gloo process group): two ranks make one worker's update, with
either strategy; ddp and fsdp2 checkpoints are the same and load into each other."""
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rl_fixtures import make_tiny_exaone, random_batch  # noqa: E402
from tolerances import log_softmax_tolerance, logit_bound, tolerance  # noqa: E402

VOCAB, HIDDEN = 64, 32
STEPS = 2
TEMPERATURE = 0.7
MICRO_BATCH_TOKENS = 34  # the two ranks' shards of the test batch make 5 and 4 micro-batches


def _config(model_dir: Path, strategy: str = "ddp"):
    from dualmode_rl.rl.learner import LearnerConfig

    # adam_eps=1: the update is g / (|g| + 1), a slope <= 1 in the gradient and below 1 in size, so float
    # rounding in tiny gradients is not amplified; no clipping, so a wrongly scaled gradient (a mean over
    # ranks instead of the sum) changes the update instead of being normalised away. float64 weights
    # (dtype auto: the checkpoint's): one process and two ranks order the network's sums differently and
    # agree to float64 rounding there; logits, log-probs, the loss and the LM head's gradient stay float32.
    return LearnerConfig(model_path=str(model_dir), loss="agapo", beta=0.05, lr=1.0, adam_eps=1.0, max_grad_norm=None,
                         micro_batch_tokens=MICRO_BATCH_TOKENS, layout="shared_prompt", strategy=strategy,
                         temperatures={"reasoning": TEMPERATURE})


def _assert_weights_close(ours: dict, theirs: dict, atol: float) -> None:
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=0, atol=atol, msg=name)


def _trained_state(dcp_dir: Path, out: Path) -> dict:
    """A torch.distributed.checkpoint folder as one plain state dict (torch's own converter)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(dcp_dir, out)
    return torch.load(out, weights_only=False)


@pytest.mark.slow
def test_two_ranks_make_one_workers_update_with_either_strategy_and_share_checkpoints(tmp_path):
    import ray

    from dualmode_rl.orchestration.learner_group import LearnerGroup, LearnerPlacement
    from dualmode_rl.rl.learner import Learner
    from dualmode_rl.rl.micro_batches import plan_micro_batches, shard_for_rank

    model_dir = make_tiny_exaone(tmp_path / "model", dtype=torch.float64, tie_word_embeddings=True)  # tied LM head under FSDP2
    batch = random_batch(4, 4, VOCAB, seed=11)
    lengths = [len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids)]
    counts = {len(plan_micro_batches(lengths, shard_for_rank(lengths, 2, r), MICRO_BATCH_TOKENS, None, "shared_prompt"))
              for r in range(2)}
    assert len(counts) == 2  # unequal: FSDP2 needs the short rank's padding pass, or it deadlocks

    single = Learner(_config(model_dir))
    start = {k: v.clone() for k, v in single.export_weights().items()}
    reference = single.reference_logprobs(batch.prompt_ids, batch.completion_ids, batch.modes)
    sequences = [p + c for p, c in zip(batch.prompt_ids, batch.completion_ids)]
    bounds, single_metrics = [], []
    for _ in range(STEPS):
        bounds.append(logit_bound(single.policy.hf_model, sequences, TEMPERATURE))  # of the weights this step's metrics see
        single_metrics.append(single.step(batch))
    expected = single.export_weights()
    # The float32 parts reduce over at most the batch's tokens, the vocabulary and the hidden size.
    # Weights: each Adam step moves a weight by less than 1, STEPS steps. Metrics are token sums of terms
    # below `per_token` (|A log p|, a KL term, an entropy) over a normaliser >= 1; the gradient norm and
    # Adam's first moment inherit the gradients' relative rounding.
    n_tokens = sum(map(len, sequences))
    n_terms = n_tokens + VOCAB + HIDDEN
    weight_tol = tolerance(torch.float32, n_terms, magnitude=float(STEPS))
    moment_tol = tolerance(torch.float32, n_terms, magnitude=max(m["grad_norm"] for m in single_metrics))
    assert max((expected[k] - start[k]).abs().max().item() for k in expected) > 1000 * weight_tol  # a real update
    assert "lm_head.weight" not in expected  # tied: exported once, as save_pretrained does

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        placement = LearnerPlacement(num_workers=2, cpus_per_worker=1, torch_threads=1)
        runs = {}
        for strategy in ("ddp", "fsdp2"):
            group = LearnerGroup(_config(model_dir, strategy), placement, weight_dir=str(tmp_path))
            try:
                ahead = group.reference_logprobs(batch.prompt_ids, batch.completion_ids, batch.modes)
                metrics = []
                for step in range(1, STEPS + 1):
                    metrics.append(group.step(batch))
                    group.save(tmp_path / strategy / f"step{step}")
                synced = Path(group.sync_weights_to_file(version=STEPS))
                runs[strategy] = load_file(synced)
                synced.unlink()
                if strategy == "fsdp2":  # resume from the ddp checkpoint of step 1: the same second step
                    group.load(tmp_path / "ddp" / "step1")
                    group.step(batch)
                    resumed = Path(group.sync_weights_to_file(version=STEPS))
                    _assert_weights_close(load_file(resumed), expected, weight_tol)
            finally:
                group.shutdown()
            _assert_weights_close(runs[strategy], expected, weight_tol)
            for ours, theirs, bound in zip(metrics, single_metrics, bounds):
                per_token = 3 * (math.log(VOCAB) + 2 * bound)
                for key in ("loss", "kl", "entropy", "entropy/reasoning", "kl/non_reasoning"):
                    assert ours[key] == pytest.approx(theirs[key], abs=tolerance(torch.float32, n_terms, per_token * n_tokens)), \
                        (strategy, key)
                assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=tolerance(torch.float32, n_terms)), strategy
            if strategy == "ddp":  # each rank scored its share beside the step, on its replicated reference
                logprob_tol = log_softmax_tolerance(torch.float32, HIDDEN, VOCAB, bounds[0])
                for ours, theirs in zip(ahead, reference):
                    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), rtol=0, atol=logprob_tol)
            else:
                assert ahead is None  # sharded reference: the step computes it, no collectives on a second thread
    finally:
        ray.shutdown()

    ddp, fsdp2 = tmp_path / "ddp" / f"step{STEPS}", tmp_path / "fsdp2" / f"step{STEPS}"
    _assert_weights_close(load_file(fsdp2 / "policy" / "model.safetensors"),
                          load_file(ddp / "policy" / "model.safetensors"), weight_tol)
    ours, theirs = (_trained_state(d / "trainer" / "dcp", tmp_path / f"{d.parent.name}.pt") for d in (fsdp2, ddp))
    _assert_weights_close(ours["model"], theirs["model"], weight_tol)
    assert ours["optimizer"]["state"].keys() == theirs["optimizer"]["state"].keys()
    for name, state in theirs["optimizer"]["state"].items():
        assert ours["optimizer"]["state"][name]["step"] == state["step"] == STEPS
        torch.testing.assert_close(ours["optimizer"]["state"][name]["exp_avg"], state["exp_avg"], rtol=0, atol=moment_tol)
