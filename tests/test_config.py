"""Config: YAML + key.sub=value overrides; unknown keys and bad values are errors naming the key."""
import pytest

from dualmode_rl.orchestration.config import ConfigError, load_config


def test_defaults_and_nested_override_keeps_siblings():
    cfg = load_config(None, ["rollout.reasoning.max_tokens=32", "train.steps=7"])
    assert cfg.rollout.reasoning.max_tokens == 32
    assert cfg.rollout.reasoning.temperature == 1.0  # sibling default kept
    assert cfg.train.steps == 7


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 3\nalgorithm:\n  loss: grpo\n")
    cfg = load_config(path, ["train.steps=5"])
    assert (cfg.train.steps, cfg.algorithm.loss) == (5, "grpo")


@pytest.mark.parametrize("override, names", [
    (["train.stepz=3"], "'train.stepz': unknown key"),
    (["nosuch.section=1"], "'nosuch': unknown key"),
    (["rollout.num_workers=abc"], "'rollout.num_workers'"),
    (["rollout.reasoning.top_p=2"], "'rollout.reasoning.top_p'"),
    (["rewards.rewards=[{name: auto, wieght: 2}]"], "'rewards.rewards.0.wieght': unknown key"),
    (["bootstrap.shape.hidden_size=64"], "'bootstrap.shape'"),
    (["rollout.reasoning.top_k=0"], "'rollout.reasoning.top_k'"),
    (["learner.off_policy_correction=is"], "'learner.off_policy_correction'"),
    (["learner.off_policy_cap=1"], "'learner.off_policy_cap'"),
])
def test_bad_override_names_the_key(override, names):
    with pytest.raises(ConfigError, match=names.replace("[", r"\[").replace(".", r"\.")):
        load_config(None, override)


def test_bad_file_names_the_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "train.stepz" in str(err.value)
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(None, ["train.steps"])


def test_shipped_configs_validate():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


def test_off_policy_correction_is_on_exactly_when_rollout_is_asynchronous(caplog):
    from dualmode_rl.orchestration.loop import learner_config

    def correction(*overrides):
        return learner_config(load_config(None, list(overrides)), "model").off_policy_correction

    assert correction("rollout.max_staleness=1") == "tis" and correction("rollout.max_staleness=0") == "none"
    assert correction("rollout.max_staleness=0", "learner.off_policy_correction=mis") == "mis"
    assert load_config(None).rollout.reasoning.top_p == 1.0 and load_config(None).eval.reasoning.top_p == 0.95
    assert "not the sampler's distribution" not in caplog.text
    correction("rollout.non_reasoning.top_p=0.9")
    assert "rollout.non_reasoning samples with top-p/top-k" in caplog.text
