"""The learner group (Ray actors, one gloo process group): two ranks make one worker's update, with
either strategy; ddp and fsdp2 checkpoints are the same and load into each other."""
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rl_fixtures import make_tiny_exaone, random_batch  # noqa: E402

VOCAB = 64
STEPS = 2
MICRO_BATCH_TOKENS = 34  # the two ranks' shards of the test batch make 5 and 4 micro-batches


def _config(model_dir: Path, strategy: str = "ddp"):
    from dualmode_rl.rl.learner import LearnerConfig

    # adam_eps=1: the update is g / (|g| + 1), a slope <= 1 in the gradient, so float rounding in tiny
    # gradients is not amplified; no clipping, so a wrongly scaled gradient (a mean over ranks instead of
    # the sum) changes the update instead of being normalised away.
    return LearnerConfig(model_path=str(model_dir), loss="agapo", beta=0.05, lr=1.0, adam_eps=1.0, max_grad_norm=None,
                         micro_batch_tokens=MICRO_BATCH_TOKENS, layout="shared_prompt", strategy=strategy,
                         temperatures={"reasoning": 0.7})


def _tolerance(batch, grad_norms: list[float]) -> float:
    """Two runs differ only in the order float32 sums are taken: the ranks (and their micro-batches) split
    the batch differently. A gradient entry sums at most one term per position of the batch (n = prompt +
    completion tokens); a float32 sum of n terms is within (n - 1)·eps·Σ|terms| of exact in any order, so
    two orders differ by < 2·n·eps·Σ|terms|, with Σ|terms| taken at the gradient's scale: its norm, which
    bounds every entry (at least 1). The update g / (|g| + 1) has slope <= 1 in g, and the steps' errors add."""
    n = sum(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids))
    return STEPS * 2 * n * torch.finfo(torch.float32).eps * max(1.0, *grad_norms)


def _assert_weights_close(ours: dict, theirs: dict, tolerance: float) -> None:
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=0, atol=tolerance, msg=name)


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

    model_dir = make_tiny_exaone(tmp_path / "model", tie_word_embeddings=True)  # the tied LM head under FSDP2
    batch = random_batch(4, 4, VOCAB, seed=11)
    lengths = [len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids)]
    counts = {len(plan_micro_batches(lengths, shard_for_rank(lengths, 2, r), MICRO_BATCH_TOKENS, None, "shared_prompt"))
              for r in range(2)}
    assert len(counts) == 2  # unequal: FSDP2 needs the short rank's padding pass, or it deadlocks

    single = Learner(_config(model_dir))
    start = {k: v.clone() for k, v in single.export_weights().items()}
    reference = single.reference_logprobs(batch.prompt_ids, batch.completion_ids, batch.modes)
    single_metrics = [single.step(batch) for _ in range(STEPS)]
    tolerance = _tolerance(batch, [m["grad_norm"] for m in single_metrics])
    expected = single.export_weights()
    assert max((expected[k] - start[k]).abs().max().item() for k in expected) > 100 * tolerance  # a real update
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
                    _assert_weights_close(load_file(resumed), expected, tolerance)
            finally:
                group.shutdown()
            _assert_weights_close(runs[strategy], expected, tolerance)
            for ours, theirs in zip(metrics, single_metrics):
                for key in ("loss", "kl", "entropy", "grad_norm", "entropy/reasoning", "kl/non_reasoning"):
                    assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), (strategy, key)
            if strategy == "ddp":  # each rank scored its share beside the step, on its replicated reference
                for ours, theirs in zip(ahead, reference):
                    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), rtol=0, atol=tolerance)
            else:
                assert ahead is None  # sharded reference: the step computes it, no collectives on a second thread
    finally:
        ray.shutdown()

    ddp, fsdp2 = tmp_path / "ddp" / f"step{STEPS}", tmp_path / "fsdp2" / f"step{STEPS}"
    _assert_weights_close(load_file(fsdp2 / "policy" / "model.safetensors"),
                          load_file(ddp / "policy" / "model.safetensors"), tolerance)
    ours, theirs = (_trained_state(d / "trainer" / "dcp", tmp_path / f"{d.parent.name}.pt") for d in (fsdp2, ddp))
    _assert_weights_close(ours["model"], theirs["model"], tolerance)
    assert ours["optimizer"]["state"].keys() == theirs["optimizer"]["state"].keys()
    for name, state in theirs["optimizer"]["state"].items():
        assert ours["optimizer"]["state"][name]["step"] == state["step"] == STEPS
        torch.testing.assert_close(ours["optimizer"]["state"][name]["exp_avg"], state["exp_avg"], rtol=0, atol=tolerance)
