"""Config: YAML + key.sub=value overrides; unknown keys and bad values are errors naming the key."""
import pytest

from dualmode_rl.rl.policy import LoraSettings

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
    from dualmode_rl.orchestration.components import learner_config, warn_if_sampling_truncated

    def correction(*overrides):
        return learner_config(load_config(None, list(overrides))).off_policy_correction

    assert correction("rollout.max_staleness=1") == "tis" and correction("rollout.max_staleness=0") == "none"
    assert correction("rollout.max_staleness=0", "learner.off_policy_correction=mis") == "mis"
    assert correction("rollout.max_staleness=0", "learner.steps_per_batch=2") == "tis"
    assert load_config(None).rollout.reasoning.top_p == 1.0 and load_config(None).eval.reasoning.top_p == 0.95
    warn_if_sampling_truncated(load_config(None))
    assert "not the sampler's distribution" not in caplog.text
    warn_if_sampling_truncated(load_config(None, ["rollout.non_reasoning.top_p=0.9"]))
    assert "rollout.non_reasoning samples with top-p/top-k" in caplog.text
def _other_value(name: str, field, default):
    """A valid value different from `default`, from the field's type (the section is walked, not listed)."""
    import types
    import typing

    from pydantic import BaseModel

    special = {"device": "cpu"}  # free-form strings
    if name in special:
        return special[name]
    union = typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
    kind = next(a for a in typing.get_args(field.annotation) if a is not type(None)) if union else field.annotation
    if typing.get_origin(kind) is typing.Literal:
        return next(v for v in typing.get_args(kind) if v != default)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return {"r": 4, "alpha": 8}
    if kind is bool:
        return not default
    if kind is int:
        return (default or 2) + 1
    if kind is float:
        return (default or 1.0) * 2
    if typing.get_origin(kind) is tuple:
        return tuple(v / 2 for v in default)
    raise AssertionError(f"learner.{name}: no rule for {field.annotation}; extend _other_value")


def test_every_learner_key_reaches_the_learner_with_one_default():
    import json
    from dataclasses import fields

    from dualmode_rl.orchestration.components import PLACEMENT_KEYS, learner_config, learner_placement
    from dualmode_rl.orchestration.config import LearnerSection
    from dualmode_rl.rl.learner import LearnerConfig

    renamed: dict[str, str] = {}  # learner.* keys are LearnerConfig's field names
    defaults = learner_config(load_config(None))
    changed = {name: _other_value(name, field, field.default) for name, field in LearnerSection.model_fields.items()}
    changed.update(layout="packed", attn_implementation="eager", gpus_per_worker=1.0)  # a combination the learner accepts
    cfg = load_config(None, [f"learner.{k}={json.dumps(v)}" for k, v in changed.items()])  # JSON is YAML
    built, placement = learner_config(cfg), learner_placement(cfg)
    for name, value in changed.items():
        got = getattr(placement, name) if name in PLACEMENT_KEYS else getattr(built, renamed.get(name, name))
        got = vars(got) if name == "lora" else got
        want = {**vars(LoraSettings()), **value} if name == "lora" else value
        assert got == want, f"learner.{name}={value} arrived as {got}"
        if name not in PLACEMENT_KEYS and name not in ("lora", "off_policy_correction"):  # auto -> concrete
            assert getattr(defaults, renamed.get(name, name)) == LearnerSection.model_fields[name].default, name
    from_elsewhere = {"model_path", "loss", "beta", "loss_agg", "epsilon_low", "epsilon_high", "max_completion_length",
                      "seed", "total_steps", "temperatures"}
    unset = {f.name for f in fields(LearnerConfig)} - from_elsewhere - {renamed.get(k, k) for k in LearnerSection.model_fields}
    assert not unset, f"LearnerConfig fields no config key sets: {unset}"
    cfg = load_config(None, ["algorithm.loss=dapo", "algorithm.beta=0.2", "algorithm.loss_aggregation=token_mean",
                             "algorithm.epsilon_low=0.1", "algorithm.epsilon_high=0.3", "algorithm.max_completion_length=99",
                             "train.seed=7", "train.steps=9", "rollout.reasoning.temperature=0.6", "model=/m"])
    built = learner_config(cfg)
    assert (built.loss, built.beta, built.loss_agg, built.epsilon_low, built.epsilon_high, built.max_completion_length,
            built.seed, built.total_steps, built.temperatures["reasoning"], built.model_path) == \
        ("dapo", 0.2, "token_mean", 0.1, 0.3, 99, 7, 9, 0.6, "/m")


@pytest.mark.parametrize("override, names", [
    (["algorithm.loss=ppo"], "'algorithm.loss': Value error, unknown loss 'ppo'"),
    (["algorithm.advantage=gae"], "'algorithm.advantage': Value error, unknown advantage 'gae'"),
    (["algorithm.advantage=agapo_neg", "algorithm.advantage_params={all_incorrect_advantage: 0.3}"],
     "advantage_params: advantage 'agapo_neg': all_incorrect_advantage must be <= 0"),
    (["algorithm.advantage_params={all_incorrect_advantage: -0.2}"], "advantage_params.all_incorrect_advantage: not a parameter"),
    (["learner.off_policy_cap=1.0"], "'learner.off_policy_cap': Input should be greater than 1"),
    (["learner.off_policy_level=batch"], "'learner.off_policy_level': Input should be 'sequence' or 'token'"),
    (["learner.layout=shared_prompt", "learner.attn_implementation=flash_attention_2"], "learner.layout 'shared_prompt' needs"),
    (["learner.device=cuda"], "'learner': Value error, device 'cuda' needs gpus_per_worker > 0"),
])
def test_bad_algorithm_and_learner_values_fail_at_load_naming_the_key(override, names):
    with pytest.raises(ConfigError, match=names.replace("(", r"\(").replace("[", r"\[").replace(".", r"\.")):
        load_config(None, override)


def test_advantage_parameters_reach_the_estimator():
    import torch

    from dualmode_rl.rl.advantages import get_advantage

    cfg = load_config(None, ["algorithm.advantage=agapo_neg", "algorithm.advantage_params={all_incorrect_advantage: -0.2}"])
    rewards = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    ours = get_advantage(cfg.algorithm.advantage, **cfg.algorithm.advantage_params)(rewards)
    assert torch.equal(ours, get_advantage("agapo_neg", all_incorrect_advantage=-0.2)(rewards))
    assert not torch.equal(ours, get_advantage("agapo_neg")(rewards))  # the default -0.1 gives another batch


def test_per_mode_normalisation_loads_with_any_registered_estimator():
    # the config's own check of the estimator runs a one-prompt batch without modes; normalize stays out of it
    for advantage in ("agapo", "agapo_neg", "grpo"):
        assert load_config(None, [f"algorithm.advantage={advantage}", "algorithm.normalize=mode"]).algorithm.normalize == "mode"
