"""Learner side of dualmode-rl: advantages (rl.advantages), policy losses (rl.losses), the learner
(rl.learner) and its helpers. Imports neither ray nor vllm."""
