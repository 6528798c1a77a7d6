"""Policy weights from the trainer into running vLLM engines through vLLM's weight-transfer API.

- `plan`: the plain data a trainer rank needs (backend, rendezvous address, group size, bucket size).
- `sender`: the trainer side (`WeightSender`), built from a plan in any process; never imports ray.
- `client`: drives the rollout actors' side of vLLM's API (start / receive / finish) from rank 0.
- `gloo_engine`: dualmode-rl's engine for CPU (both sides), registered with vLLM's factories.
- `sync`: the driver's side: one transfer group over the trainer and every rollout worker, kept
  current when rollout actors are replaced; or the safetensors-file path.
"""
