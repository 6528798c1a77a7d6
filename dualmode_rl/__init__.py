"""dualmode-rl: RL post-training (AGAPO) for unified LLMs with a reasoning and a non-reasoning mode.

Every module is imported under this one package name (`dualmode_rl.rl`, `dualmode_rl.rollout`,
`dualmode_rl.rewards`, `dualmode_rl.filtering`, `dualmode_rl.orchestration`), mapped from the
repository's top-level folders by pyproject.toml's package-dir, so a user's own `rewards.py` or
`rl/` on the path never shadows them.
"""
__version__ = "0.1.0"
