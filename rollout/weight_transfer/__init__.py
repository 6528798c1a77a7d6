"""Policy weights from the trainer into running vLLM engines through vLLM's weight-transfer API.

- `plan`: the plain data a trainer rank needs (backend, rendezvous address, group size, bucket size).
- `sender`: the trainer side (`WeightSender`), built from a plan in any process; never imports ray.
- `client`: drives the rollout actors' side of vLLM's API (start / receive / finish) from rank 0.
- `gloo_engine`, `shm_engine`: dualmode-rl's engines for CPU (both sides; gloo across nodes, shm on the
  trainer's node), registered with vLLM's factories; `cpu_common` holds what they share.
- `sync`: the driver's side: one transfer group over the trainer and every rollout worker, kept
  current when rollout actors are replaced; or the safetensors-file path.
"""
