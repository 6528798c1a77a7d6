"""`dualmode-rl train`: the RL loop. Rollout and learner on Ray actors, rewards in parallel, AGAPO step, weight sync."""
from __future__ import annotations

import logging
from pathlib import Path

from tqdm import trange
from transformers import AutoTokenizer

from dualmode_rl.rl.advantages import get_advantage
from dualmode_rl.rollout.pool import RolloutPool

from .checkpoint import LoopState, save_checkpoint
from .components import (accuracy_reward_name, build_weight_sync, learner_config, learner_device, learner_placement,
                         overlong_rules, pool_placement, rollout_engine_kwargs, warn_if_sampling_truncated,
                         weight_transfer_backend)
from .config import RUN_CONFIG_FILE, DualModeConfig, dump_config
from .dynamic_sampling import dynamic_sampling
from .learner_group import LearnerGroup
from .metrics import ERRORS_FILE, MetricsLogger, RewardFailureWatch
from .preflight import preflight_train
from .progress import step_postfix
from .ray_runtime import init_ray, ray_node_count
from .rollout_ahead import RolloutAhead
from .sampler import PromptSampler
from .step import learn, rollout_seed
from .train_eval import TrainingEval

log = logging.getLogger(__name__)


def train(cfg: DualModeConfig, resume: str = "no", allow_config_change: bool = False) -> Path:
    """Runs train.steps RL steps (continuing from the latest checkpoint with `resume` "yes" or "auto");
    returns the run folder."""
    start = preflight_train(cfg, resume, allow_config_change)  # every check, before any actor or file
    state, checkpoint, start_model, dataset, rewards = (start.state, start.checkpoint, start.model_path,
                                                        start.dataset, start.rewards)
    warn_if_sampling_truncated(cfg)
    evaluator = TrainingEval(cfg)  # with train.eval_every, loads and checks its problems before any actor or file
    run_dir = Path(cfg.train.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / RUN_CONFIG_FILE)
    sampler = PromptSampler(len(dataset), cfg.train.seed, **state.sampler)
    accuracy_reward = accuracy_reward_name(cfg, rewards)
    advantage_fn = get_advantage(cfg.algorithm.advantage, normalize=cfg.algorithm.normalize, **cfg.algorithm.advantage_params)
    overlong = overlong_rules(cfg)
    init_ray()
    transfer = weight_transfer_backend(cfg, learner_device(cfg), ray_node_count())
    # The engines start while the learner loads, except beside it on the same GPUs: there vLLM's memory
    # check and profiling must already see the learner's memory in use.
    learner = LearnerGroup(learner_config(cfg), learner_placement(cfg), weight_dir=cfg.rollout.weight_file_dir,
                           wait=cfg.rollout.placement == "colocated")
    rollout = RolloutPool(cfg.rollout.num_workers, rollout_engine_kwargs(cfg, start_model, state.step, transfer),
                          engine=cfg.rollout.engine, placement=pool_placement(cfg, learner))
    learner.wait_started()
    weight_sync = build_weight_sync(cfg, rollout, learner, transfer)
    if checkpoint:
        learner.load(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(start_model)
    metrics = MetricsLogger(run_dir, keep_until_step=state.step, config=cfg, tokenizer=tokenizer)
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
            metrics.log_samples(step, scored.groups, scored.outputs)  # every train.log_samples_every steps
            failures.check(step_metrics)  # a reward failing on every sample stops the run, naming it
            bar.set_postfix_str(step_postfix(step_metrics))
            if saving:
                save_checkpoint(run_dir, LoopState(step, sampler.state()), learner, tokenizer, metrics.path)
                evaluator.name_best(run_dir, metrics.path)
    finally:  # also on SIGTERM (the CLI turns it into SystemExit): no orphaned actors
        metrics.close()
        weight_sync.close()
        rollout.shutdown()
        learner.shutdown()
        ahead.close()
        rewards.close()
        evaluator.close()
    return run_dir
