"""Generation for dualmode-rl: both EXAONE 4.0 modes, vLLM (or transformers) engines, Ray actors, weight updates.

- `rollout.types`: the records that leave this package (GenerationRequest, RolloutGroup, Sample).
- `rollout.modes`: per-mode sampling settings and chat-template prompt rendering.
- `rollout.types.Engine`: what every engine offers; `rollout.registry`: the engines by name (`rollout.engine`):
  `rollout.vllm_engine.VllmEngine` and `rollout.hf_engine.HfEngine`, one in-process engine each.
- `rollout.worker.RolloutWorker`, `rollout.pool.RolloutPool`: engines inside Ray actors;
  `rollout.placement`: each engine's placement group (1-GPU bundles for tensor parallelism).
- `rollout.weight_transfer`: new weights through vLLM's weight-transfer API (shm and gloo engines on
  CPU, vLLM's nccl / ipc on GPUs); `rollout.vllm_weight_sync`: the loading both transports share.

Nothing heavy (vllm, ray) is imported here; each module imports them when it needs them.
"""
