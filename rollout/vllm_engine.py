"""A vLLM generation engine for both modes, with in-place policy weight updates.

vLLM starts its engine core in a spawned process: build `VllmEngine` only under
`if __name__ == "__main__":` (or inside a Ray actor / pytest fixture), never at import time.

Sampling log-probs (`Sample.logprobs`): vLLM's `logprobs_mode="processed_logprobs"` (the default
here), the log-probability of each sampled token under the distribution it was drawn from. In
vllm 0.32 (v1/sample/sampler.py, ops/topk_topp_sampler.py) that is log_softmax in fp32 of the logits
divided by the temperature, after top-k and then top-p set the cut tail to -inf, so renormalised
over the kept tokens; tests/test_rollout_engine.py checks both, against transformers. With top-p 1
and top-k off it is log_softmax(logits / T), what the learner computes. `logprobs_mode="raw_logprobs"`
gives the untempered model's log-probs instead. Prompt log-probs are always raw.
"""
from __future__ import annotations

import multiprocessing
import os

import torch

from .engine_base import EngineBase
from .modes import ModeSampling, SamplingConfig, check_prompt_fits, engine_seed, render_prompt_ids
from .thinking_budget import mark_forced, vllm_reasoning_config
from .types import GenerationRequest, RolloutGroup, Sample
from .weight_file import write_weights_file
from .weight_transfer.plan import CPU_ENGINES

WEIGHT_SYNC_EXTENSION = "dualmode_rl.rollout.vllm_weight_sync.WeightSyncExtension"
CPU_MEMORY_SHARE = 0.1  # on CPU this is the share of the NUMA node's RAM; the 0.92 default fails
GPU_MEMORY_SHARE = 0.85  # GPUs of its own
COLOCATED_GPU_SHARE = 0.45  # GPUs shared with the learner (vLLM sleeps during the learner step)


def vllm_engine_args(model_path: str, *, on_cpu: bool, max_model_len: int, seed: int, dtype: str = "auto",
                     gpu_memory_utilization: float | None = None, tensor_parallel_size: int = 1,
                     logprobs_mode: str = "processed_logprobs", enforce_eager: bool | None = None,
                     enable_sleep_mode: bool = False, weight_transfer: str = "file",
                     distributed_executor_backend: str | None = None) -> dict:
    """`vllm.LLM`'s keyword arguments. None and "auto" resolve by platform: fp32, eager and a 10% memory
    share on CPU; the model's dtype, CUDA graphs and 85% of the GPU (45% when colocated) on GPUs.
    vLLM's CPU backend has no sleep mode (it rejects `enable_sleep_mode`; its workers' sleep and
    wake_up do nothing), so colocation on CPU only pauses the scheduler."""
    if gpu_memory_utilization is None:
        gpu_memory_utilization = CPU_MEMORY_SHARE if on_cpu else COLOCATED_GPU_SHARE if enable_sleep_mode else GPU_MEMORY_SHARE
    args = dict(
        model=str(model_path),
        dtype="float32" if on_cpu and dtype == "auto" else dtype,
        max_model_len=max_model_len,
        seed=seed,
        gpu_memory_utilization=gpu_memory_utilization,
        tensor_parallel_size=tensor_parallel_size,
        logprobs_mode=logprobs_mode,
        enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
        enable_sleep_mode=enable_sleep_mode and not on_cpu,
        worker_extension_cls=WEIGHT_SYNC_EXTENSION,
    )
    if weight_transfer != "file":
        args["weight_transfer_config"] = {"backend": CPU_ENGINES.get(weight_transfer, weight_transfer)}
    if distributed_executor_backend is not None:
        args["distributed_executor_backend"] = distributed_executor_backend
    return args


class VllmEngine(EngineBase):
    def _start(self, seed: int | None, in_process: bool | None = None, **settings) -> None:
        """`settings`: vllm_engine_args' keywords (dtype, gpu_memory_utilization, weight_transfer, ...).
        `in_process`: vLLM's engine core in this process (None: on CPU only; see set_engine_core_process)."""
        from vllm import LLM
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        set_engine_core_process(on_cpu if in_process is None else in_process)
        before = set(multiprocessing.active_children())
        self.llm = LLM(**self.llm_kwargs(dict(model_path=self.model_path, sampling=self.sampling, seed=seed,
                                              max_model_len=self.max_model_len, **settings), on_cpu),
                       reasoning_config=vllm_reasoning_config(self.think_markers))  # requests may carry a thinking budget
        self._processes = [p for p in multiprocessing.active_children() if p not in before]  # the engine core

    @staticmethod
    def llm_kwargs(engine_kwargs: dict, on_cpu: bool) -> dict:
        """`vllm.LLM`'s keyword arguments for this class's keyword arguments `engine_kwargs`."""
        kw = {k: v for k, v in engine_kwargs.items() if k not in ("policy_version", "in_process")}
        sampling = kw.pop("sampling", None) or SamplingConfig()
        return vllm_engine_args(kw.pop("model_path"), on_cpu=on_cpu, seed=engine_seed(kw.pop("seed", None), sampling),
                                max_model_len=kw.pop("max_model_len"), **kw)

    def _reseed(self, seed: int) -> None:
        self.llm.collective_rpc("dualmode_rl_reseed", args=(seed,))

    def _generate(self, requests: list[GenerationRequest], greedy: bool,
                  sampling: SamplingConfig | None = None) -> list[RolloutGroup]:
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        prompt_ids = [render_prompt_ids(self.tokenizer, r) for r in requests]
        for r, ids in zip(requests, prompt_ids):
            check_prompt_fits(r, ids, self.max_model_len)
        modes = [(sampling or self.sampling).for_mode(r.mode) for r in requests]
        params = [self._sampling_params(mode, 1 if greedy else r.n, greedy) for r, mode in zip(requests, modes)]
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            RolloutGroup(
                request_id=r.request_id,
                mode=r.mode,
                prompt_token_ids=ids,
                samples=[self._to_sample(c, ids, mode.thinking_budget) for c in out.outputs],
            )
            for r, ids, out, mode in zip(requests, prompt_ids, outputs, modes)
        ]

    def _sampling_params(self, mode: ModeSampling, n: int, greedy: bool):
        from vllm import SamplingParams

        return SamplingParams(
            n=n,
            temperature=0.0 if greedy else mode.temperature,
            top_p=1.0 if greedy else mode.top_p,
            top_k=0 if greedy else max(mode.top_k, 0),  # vLLM: 0 is off
            max_tokens=mode.max_tokens,
            logprobs=0,  # only the chosen token's logprob
            stop_token_ids=[self.tokenizer.eos_token_id],
            detokenize=False,  # decoded below in one place, identically to HfEngine
            thinking_token_budget=mode.thinking_budget,
        )

    def _to_sample(self, completion, prompt_ids: list[int], budget: int | None) -> Sample:
        token_ids = list(completion.token_ids)
        logprobs = [step[tok].logprob for tok, step in zip(token_ids, completion.logprobs)]
        forced, logprobs = mark_forced(prompt_ids, token_ids, logprobs, self.think_markers, budget)
        return Sample(
            token_ids=token_ids,
            logprobs=logprobs,
            text=self.tokenizer.decode(token_ids, skip_special_tokens=True),
            finish_reason="length" if completion.finish_reason == "length" else "stop",
            policy_version=self._policy_version,
            forced_positions=forced,
        )

    def prompt_logprobs(self, token_ids: list[int]) -> list[float]:
        """log p(token_t | tokens_<t) for t = 1..len-1 under the current weights (len(token_ids)-1 values)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        (out,) = self.llm.generate([TokensPrompt(prompt_token_ids=list(token_ids))], params, use_tqdm=False)
        return [step[tok].logprob for tok, step in zip(token_ids[1:], out.prompt_logprobs[1:])]

    def update_weights(self, weights: dict[str, torch.Tensor], version: int) -> None:
        """Load Hugging Face-named tensors (a full or partial state dict) into the running engine."""
        path = write_weights_file(weights)
        try:
            self.load_weights_file(str(path), version)
        finally:
            path.unlink(missing_ok=True)

    def load_weights_file(self, path: str, version: int) -> None:
        """Same as `update_weights`, from a safetensors file every worker of this engine can read."""
        self.llm.collective_rpc("dualmode_rl_load_weights", args=(path,))
        self._finish(version)

    # ---- vLLM's weight-transfer API (rollout/weight_transfer/): the trainer streams, every worker receives
    def init_weight_transfer(self, init_info: dict) -> None:
        self.llm.init_weight_transfer_engine({"init_info": init_info})

    def start_weight_update(self) -> None:
        self.llm.start_weight_update()

    def receive_weights(self, update_info: dict) -> None:
        self.llm.update_weights({"update_info": update_info})

    def finish_weight_update(self, version: int) -> None:
        self.llm.finish_weight_update()
        self._finish(version)

    def _finish(self, version: int) -> None:
        self.llm.reset_prefix_cache()  # KV blocks cached under the old weights are stale
        self._policy_version = int(version)

    # ---- colocation: vLLM's sleep mode frees the GPU for the learner step
    def sleep(self) -> None:
        self.llm.sleep(level=1)

    def wake_up(self) -> None:
        self.llm.wake_up()

    def is_sleeping(self) -> bool:
        return self.llm.llm_engine.is_sleeping()

    def shutdown(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        engine_core = getattr(llm.llm_engine, "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()
        self.llm = None
        _reap(self._processes)


def set_engine_core_process(in_process: bool) -> None:
    """vLLM's switch, an environment variable that an in-process engine caches with all the others
    (hence the reset). In process, the engine core's steps run in the caller's process and thread,
    seeding its global RNGs and holding a one-rank torch.distributed group while it lives. On a 2-core
    CPU machine that saves a second process (an engine started ~15 s sooner) and its messaging
    (generation ~35% faster); on GPUs the separate process overlaps scheduling with the GPU's work."""
    from vllm import envs

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
    envs.disable_envs_cache()


def _reap(processes, timeout_s: float = 10.0) -> None:
    """vLLM's shutdown SIGKILLs an engine process that outlives its grace period without waiting
    for it, which leaves a zombie until this process exits: wait for each (bounded)."""
    for proc in processes:
        proc.join(timeout_s)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout_s)

