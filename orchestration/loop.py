"""`dualmode-rl train`: the RL loop. Rollout and learner on Ray actors, rewards in parallel, AGAPO step, weight sync."""
from __future__ import annotations

import logging
from pathlib import Path

from tqdm import trange
from transformers import AutoTokenizer

from dualmode_rl.rl.advantages import get_advantage
from dualmode_rl.rollout.pool import PoolPlacement, RolloutPool

from .checkpoint import CheckpointError, LoopState, check_model_folder, latest_checkpoint, load_loop_state, save_checkpoint
from .components import accuracy_reward_name, build_reward_pool, engine_kwargs, learner_config, learner_placement
from .config import DualModeConfig, dump_config
from .data import default_source, load_prompts
from .learner_group import LearnerGroup
from .metrics import MetricsLogger
from .ray_runtime import init_ray
from .rollout_ahead import RolloutAhead
from .sampler import PromptSampler
from .step import learn

log = logging.getLogger(__name__)


def _starting_point(cfg: DualModeConfig, run_dir: Path, resume: bool) -> tuple[LoopState, Path | None, str]:
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint and not resume:
        raise CheckpointError(f"{run_dir} already holds checkpoints: pass --resume, or set train.out elsewhere")
    if checkpoint is None:
        return LoopState(), None, str(check_model_folder(cfg.model_path))
    log.info("resuming from %s", checkpoint)
    return load_loop_state(checkpoint), checkpoint, str(checkpoint / "policy")


def train(cfg: DualModeConfig, resume: bool = False) -> Path:
    """Runs train.steps RL steps (continuing from the latest checkpoint with `resume`); returns the run folder."""
    run_dir = Path(cfg.train.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    state, checkpoint, start_model = _starting_point(cfg, run_dir, resume)
    dump_config(cfg, run_dir / "config.yaml")
    dataset = load_prompts(cfg, cfg.data.train or default_source(cfg), "train")
    sampler = PromptSampler(len(dataset), cfg.train.seed, **state.sampler)
    rewards = build_reward_pool(cfg)
    accuracy_reward = accuracy_reward_name(cfg, rewards)
    advantage_fn = get_advantage(cfg.algorithm.advantage, **cfg.algorithm.advantage_params)
    init_ray()
    rollout = RolloutPool(cfg.rollout.num_workers, {**engine_kwargs(cfg, start_model), "policy_version": state.step},
                          engine=cfg.rollout.engine,
                          placement=PoolPlacement(num_gpus_per_worker=cfg.rollout.gpus_per_worker,
                                                  cpu_binds=cfg.rollout.cpu_binds))
    learner = LearnerGroup(learner_config(cfg), learner_placement(cfg), weight_dir=cfg.rollout.weight_file_dir)
    if checkpoint:
        learner.load(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(start_model)
    metrics = MetricsLogger(run_dir, keep_until_step=state.step)
    ahead = RolloutAhead(rollout, rewards, cfg.rollout.samples_per_prompt, reference=learner.reference_logprobs)

    def batch_for(step: int) -> tuple[list[dict], int]:  # rollouts depend on (seed, step) only: exact resume
        return [dataset[i] for i in sampler.next(cfg.train.prompts_per_step)], cfg.train.seed * 1_000_003 + step

    try:
        for step in trange(state.step + 1, cfg.train.steps + 1, desc="RL steps", initial=state.step, total=cfg.train.steps):
            saving = step % cfg.train.save_every == 0 or step == cfg.train.steps
            # no batch generated ahead across a checkpoint, so resume stays exact
            scored = ahead.batch(step, batch_for, prefetch_next=cfg.rollout.max_staleness > 0 and not saving)
            metrics.log(step, learn(scored, rollout, learner, advantage_fn, version=step,
                                        accuracy_reward=accuracy_reward))
            if saving:
                save_checkpoint(run_dir, LoopState(step, sampler.state()), learner, tokenizer, metrics.path)
    finally:  # also on SIGTERM (the CLI turns it into SystemExit): no orphaned actors
        metrics.close()
        rollout.shutdown()
        learner.shutdown()
        ahead.close()
        rewards.close()
    return run_dir
