"""The contracts every policy loss and advantage estimator keeps (rl/contracts.py): every built-in and the
example plug-ins pass them; a loss or estimator that breaks one is refused at load, naming it and the part."""
import pytest
import torch

from dualmode_rl.orchestration.config import ConfigError, load_config
from dualmode_rl.orchestration.preflight import check_algorithm
from dualmode_rl.plugins import PluginError
from dualmode_rl.rl.advantages import ADVANTAGES, get_advantage
from dualmode_rl.rl.contracts import ContractError, check_advantage, check_loss
from dualmode_rl.rl.losses import LOSSES, get_loss

EXAMPLE = "examples/custom_algorithm.py"


@pytest.mark.parametrize("spec", [*LOSSES, f"{EXAMPLE}:token_mean_pg"])
def test_every_loss_keeps_the_contract(spec):
    check_loss(get_loss(spec))


@pytest.mark.parametrize("spec", [*ADVANTAGES, f"{EXAMPLE}:median_baseline"])
def test_every_advantage_estimator_keeps_the_contract(spec):
    check_advantage(get_advantage(spec))


def per_micro_batch_mean(inputs, norm, settings):  # normalises by its own tokens, not the batch's
    return (-inputs.advantages[:, None] * inputs.logprobs * inputs.mask).sum() / inputs.mask.sum(), {}


def unmasked(inputs, norm, settings):
    return (-inputs.advantages[:, None] * inputs.logprobs).sum() / norm.num_sequences, {}


def per_token_loss(inputs, norm, settings):
    return -inputs.advantages[:, None] * inputs.logprobs * inputs.mask, {}


def two_arguments(inputs, norm):
    return inputs.logprobs.sum(), {}


@pytest.mark.parametrize("fn, part", [
    (per_micro_batch_mean, "not the sum of its micro-batches"),
    (unmasked, "padding tokens"),
    (per_token_loss, "finite scalar tensor"),
    (two_arguments, "must take"),
])
def test_a_loss_that_breaks_the_contract_is_refused_naming_the_part(fn, part):
    with pytest.raises(ContractError, match=part):
        check_loss(fn)


def batch_mean_baseline(rewards, valid=None, correct=None, **_):  # forgets the unscored samples
    return rewards - rewards.mean()


def first_sample_baseline(rewards, valid=None, correct=None, **_):  # depends on the order within a group
    return torch.where(valid if valid is not None else torch.ones_like(rewards, dtype=torch.bool),
                       rewards - rewards[:, :1], torch.zeros_like(rewards))


@pytest.mark.parametrize("fn, part", [
    (batch_mean_baseline, "not valid"),
    (first_sample_baseline, "order"),
    (lambda rewards, valid=None, correct=None, **_: rewards.mean(1), "rewards' shape"),
    (lambda rewards, valid=None, correct=None: rewards, "must take"),  # no modes / normalize
])
def test_an_advantage_estimator_that_breaks_the_contract_is_refused_naming_the_part(fn, part):
    with pytest.raises(ContractError, match=part):
        check_advantage(fn)


def test_a_plugin_that_breaks_its_contract_stops_start_up_naming_the_key_and_the_plugin(tmp_path):
    plugin = tmp_path / "my_loss.py"
    plugin.write_text("def loss(inputs, norm, settings):\n    return inputs.logprobs.sum(), {}\n")
    with pytest.raises(PluginError, match=r"policy loss plug-in '.*my_loss.py:loss'.*padding tokens"):
        get_loss(f"{plugin}:loss")
    cfg = load_config(None, [f"algorithm.loss={plugin}:loss"])
    with pytest.raises(ConfigError, match=r"algorithm\.loss.*my_loss\.py:loss"):
        check_algorithm(cfg)
    with pytest.raises(ConfigError, match=r"algorithm\.advantage.*'ppo'"):
        check_algorithm(load_config(None, ["algorithm.advantage=ppo"]))
