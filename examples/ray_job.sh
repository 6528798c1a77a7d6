#!/usr/bin/env bash
# docs/ray-job.md as one script: start a one-node Ray cluster, submit a short dualmode-rl run as a Ray
# job, print the latest checkpoint, stop the cluster (also when something fails).
# Usage, from the repository root:
#   MODEL=/abs/path/to/sft_checkpoint RUN=/abs/path/to/run examples/ray_job.sh
set -euo pipefail
: "${MODEL:?set MODEL to your SFT checkpoint folder (absolute path)}"
: "${RUN:?set RUN to the run folder (absolute path)}"

export RAY_AUTH_MODE=token                 # see docs/ray-job.md, "Start a cluster"
ray get-auth-token --generate > /dev/null
ray start --head --port=6379 --dashboard-port=8265
trap 'ray stop' EXIT

ray job submit --address http://127.0.0.1:8265 --working-dir examples -- \
    dualmode-rl train --model "$MODEL" quick.yaml data.train=prompts.jsonl train.out="$RUN" \
    "rewards.rewards=[{name: auto}, {name: length_penalty_reward.py:length_penalty, weight: 0.1}]"

cat "$RUN/checkpoints/latest"
