"""Two data-parallel learners (gloo, two processes) make the same update as one learner."""
import math
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rl_fixtures import make_tiny_exaone, random_batch  # noqa: E402
from tolerances import logit_bound, tolerance  # noqa: E402

VOCAB, HIDDEN = 64, 32


def _settings(model_dir: str) -> dict:
    # adam_eps=1: updates ~ lr * gradient, so float rounding in tiny gradients is not amplified.
    # float64 weights: one process and two ranks order the network's sums differently, and agree to
    # float64 rounding there; logits, log-probs, the loss and the LM head's gradient stay float32.
    return dict(model_path=model_dir, loss="agapo", beta=0.05, lr=1.0, adam_eps=1.0, max_grad_norm=1.0,
                micro_batch_tokens=48, dtype="float64")


def _worker(rank: int, world_size: int, port: int, model_dir: str, out_dir: str) -> None:
    import torch.distributed as dist

    from dualmode_rl.rl.learner import Learner, LearnerConfig

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        learner = Learner(LearnerConfig(**_settings(model_dir)))
        batch = random_batch(4, 4, VOCAB, seed=11)
        metrics = [learner.step(batch), learner.step(batch)]
        torch.save({"weights": learner.export_weights(), "metrics": metrics}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_learners_equal_one(tmp_path):
    from dualmode_rl.rl.learner import Learner, LearnerConfig

    model_dir = str(make_tiny_exaone(tmp_path / "model", dtype=torch.float64))
    mp.start_processes(_worker, args=(2, _free_port(), model_dir, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    single = Learner(LearnerConfig(**_settings(model_dir)))
    batch = random_batch(4, 4, VOCAB, seed=11)
    sequences = [p + c for p, c in zip(batch.prompt_ids, batch.completion_ids)]
    bounds, metrics = [], []
    for _ in range(2):
        bounds.append(logit_bound(single.policy.hf_model, sequences))  # of the weights this step's metrics see
        metrics.append(single.step(batch))
    weights = single.export_weights()

    # The float32 parts reduce over at most the batch's tokens, the vocabulary and the hidden size.
    # Weights: each Adam step (lr = 1, eps = 1) moves a weight by less than 1; two steps. Metrics are
    # token sums of terms below `per_token` (|A log p|, a KL term, an entropy) over a normaliser >= 1;
    # the gradient norm inherits the gradients' relative rounding.
    n_tokens = sum(map(len, sequences))
    n_terms = n_tokens + VOCAB + HIDDEN
    weight_tol = tolerance(torch.float32, n_terms, magnitude=2.0)
    start = Learner(LearnerConfig(**_settings(model_dir))).export_weights()
    assert max((weights[k] - start[k]).abs().max().item() for k in weights) > 1000 * weight_tol  # a real update
    for rank in ranks:
        for name, tensor in weights.items():
            torch.testing.assert_close(rank["weights"][name], tensor, rtol=0, atol=weight_tol)
        for ours, theirs, bound in zip(rank["metrics"], metrics, bounds):
            per_token = 3 * (math.log(VOCAB) + 2 * bound)
            for key in ("loss", "kl", "entropy", "entropy/reasoning"):
                assert theirs[key] == pytest.approx(ours[key], abs=tolerance(torch.float32, n_terms, per_token * n_tokens)), key
            assert theirs["grad_norm"] == pytest.approx(ours["grad_norm"], rel=tolerance(torch.float32, n_terms))
