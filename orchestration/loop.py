"""`dualmode-rl train`: the RL loop. Rollout on Ray actors, rewards in parallel, AGAPO step, weight sync."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from tqdm import trange
from transformers import AutoTokenizer

from dualmode_rl.rl.advantages import get_advantage
from dualmode_rl.rl.learner import Learner, LearnerConfig
from dualmode_rl.rollout.pool import PoolPlacement, RolloutPool
from dualmode_rl.rollout.types import MODES
from dualmode_rl.rollout.worker import current_node

from .checkpoint import LoopState, save_checkpoint
from .components import (accuracy_reward_name, build_weight_sync, overlong_rules, rollout_engine_kwargs, sampling_config,
                         weight_transfer_backend)
from .config import DualModeConfig, dump_config
from .dynamic_sampling import dynamic_sampling
from .metrics import ERRORS_FILE, MetricsLogger, RewardFailureWatch
from .preflight import preflight_train
from .progress import step_postfix
from .ray_runtime import init_ray
from .rollout_ahead import RolloutAhead
from .sampler import PromptSampler
from .step import learn, rollout_seed
from .train_eval import TrainingEval

log = logging.getLogger(__name__)


def learner_config(cfg: DualModeConfig, model_path: str) -> LearnerConfig:
    a, le = cfg.algorithm, cfg.learner
    for mode in MODES:
        if sampling_config(cfg).for_mode(mode).truncated:
            log.warning("rollout.%s samples with top-p/top-k: the learner scores the full softmax(logits / T), not "
                        "the sampler's distribution (mismatch/logprob_abs shows by how much)", mode)
    correction = le.off_policy_correction
    if correction == "auto":
        correction = "tis" if cfg.rollout.max_staleness > 0 else "none"
    return LearnerConfig(
        model_path=model_path, ref_model_path=cfg.model_path, loss=a.loss, lr=a.learning_rate, beta=a.beta,
        max_grad_norm=a.max_grad_norm, micro_batch_size=a.micro_batch_size, layout=a.micro_batch_layout,
        loss_agg=a.loss_aggregation,
        seed=cfg.train.seed, total_steps=cfg.train.steps,
        temperatures={mode: getattr(cfg.rollout, mode).temperature for mode in MODES},
        off_policy_correction=correction, off_policy_cap=le.off_policy_cap, off_policy_level=le.off_policy_level,
        fp32_lm_head=le.fp32_lm_head,
    )


def train(cfg: DualModeConfig, resume: str = "no", allow_config_change: bool = False) -> Path:
    """Runs train.steps RL steps (continuing from the latest checkpoint with `resume` "yes" or "auto");
    returns the run folder."""
    if cfg.train.torch_threads:
        torch.set_num_threads(cfg.train.torch_threads)
    start = preflight_train(cfg, resume, allow_config_change)  # every check, before any actor or file
    state, checkpoint, start_model, dataset, rewards = (start.state, start.checkpoint, start.model_path,
                                                        start.dataset, start.rewards)
    evaluator = TrainingEval(cfg)  # with train.eval_every, loads and checks its problems before any actor or file
    run_dir = Path(cfg.train.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    sampler = PromptSampler(len(dataset), cfg.train.seed, **state.sampler)
    accuracy_reward = accuracy_reward_name(cfg, rewards)
    advantage_fn = get_advantage(cfg.algorithm.advantage, normalize=cfg.algorithm.normalize)
    overlong = overlong_rules(cfg)
    init_ray()
    learner_cfg = learner_config(cfg, start_model)
    transfer = weight_transfer_backend(cfg, learner_cfg.device)
    rollout = RolloutPool(cfg.rollout.num_workers, rollout_engine_kwargs(cfg, start_model, state.step, transfer),
                          engine=cfg.rollout.engine,
                          placement=PoolPlacement(num_gpus_per_worker=cfg.rollout.gpus_per_worker,
                                                  cpu_binds=cfg.rollout.cpu_binds))
    learner = Learner(learner_cfg)
    weight_sync = build_weight_sync(cfg, rollout, learner, transfer)
    log.info("learner: pid %d on Ray node %s", os.getpid(), current_node())
    if checkpoint:
        learner.load_training_state(checkpoint / "trainer")
    tokenizer = AutoTokenizer.from_pretrained(start_model)
    metrics = MetricsLogger(run_dir, keep_until_step=state.step)
    failures = RewardFailureWatch(rewards, cfg.rewards.max_failed_steps, run_dir / ERRORS_FILE)
    ahead = RolloutAhead(rollout, rewards, cfg.rollout.samples_per_prompt, reference=learner.reference_logprobs)

    def prompts(count: int) -> list[dict]:
        return [dataset[i] for i in sampler.next(count)]

    def batch_for(step: int) -> tuple[list[dict], int]:  # rollouts depend on (seed, step) only: exact resume
        return prompts(cfg.train.prompts_per_step), rollout_seed(cfg.train.seed, step)

    refill = dynamic_sampling(cfg, rollout, rewards, prompts, learner.reference_logprobs, overlong)  # None when off
    try:
        bar = trange(state.step + 1, cfg.train.steps + 1, desc="RL steps", unit="step", initial=state.step,
                     total=cfg.train.steps)
        for step in bar:
            evaluating = evaluator.due(step)  # evaluated steps are checkpointed: the best one exists
            saving = step % cfg.train.save_every == 0 or step == cfg.train.steps or evaluating
            # no batch generated ahead across a checkpoint, so resume stays exact
            scored = ahead.batch(step, batch_for, prefetch_next=cfg.rollout.max_staleness > 0 and not saving,
                                 complete=refill)
            step_metrics = learn(scored, rollout, learner, weight_sync, advantage_fn, version=step,
                                 accuracy_reward=accuracy_reward, overlong=overlong)
            if evaluating:
                step_metrics.update(evaluator.run(rollout))
            metrics.log(step, step_metrics)
            failures.check(step_metrics)  # a reward failing on every sample stops the run, naming it
            bar.set_postfix_str(step_postfix(step_metrics))
            if saving:
                save_checkpoint(run_dir, LoopState(step, sampler.state()), learner, tokenizer, metrics.path)
                evaluator.name_best(run_dir, metrics.path)
    finally:  # also on SIGTERM (the CLI turns it into SystemExit): no orphaned actors
        metrics.close()
        weight_sync.close()
        rollout.shutdown()
        ahead.close()
        rewards.close()
        evaluator.close()
    return run_dir
