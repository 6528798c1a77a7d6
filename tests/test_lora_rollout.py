"""LoRA end to end: after each adapter update, vLLM's logprobs equal the learner's (issue 6).

A LoRA learner on the tiny bootstrap checkpoint takes real steps; the modules LoRA changed, merged,
go into a running vLLM engine through vLLM's weight-transfer API (the gloo engine) and nothing else
does; vLLM's prompt logprobs must then equal a plain forward of the learner's PEFT model on the same
tokens (fp32), and must differ from the logprobs before the update. Two updates, because vLLM's CPU
backend takes a different path on the first update than on later ones.
"""
from __future__ import annotations

import pytest
import torch

from dualmode_rl.orchestration.components import policy_weights
from dualmode_rl.rl.batch import TrainingBatch
from dualmode_rl.rl.learner import Learner, LearnerConfig
from dualmode_rl.rl.policy import LoraSettings
from tolerances import network_logprob_tolerance

pytestmark = pytest.mark.slow
MIN_CHANGE = 1e-2  # an update must move some logprob by at least this much, or the test proves nothing


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    pytest.importorskip("vllm")
    from dualmode_rl.rollout.engine import VllmEngine
    from dualmode_rl.rollout.modes import SamplingConfig

    engine = VllmEngine(str(tiny_checkpoint), SamplingConfig(seed=0), max_model_len=512, seed=0, weight_transfer="gloo")
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def learner(tiny_checkpoint):
    lora = LoraSettings(r=8, alpha=16)
    return Learner(LearnerConfig(model_path=str(tiny_checkpoint), lora=lora, beta=0.0, lr=1e-2,
                                 max_grad_norm=None, micro_batch_tokens=1024))


def chat_prompt(tokenizer, question: str, thinking: bool) -> list[int]:
    return list(tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                              enable_thinking=thinking, tokenize=True, return_dict=False))


@pytest.fixture(scope="module")
def batch(engine) -> TrainingBatch:
    """Two prompts (one per mode), two hand-written answers each: one rewarded, one penalised."""
    tok = engine.tokenizer
    prompts = [chat_prompt(tok, "Tom has 12 apples and buys 7 more. How many?", thinking=True),
               chat_prompt(tok, "What is 8 + 5?", thinking=False)]
    answers = [["12 + 7 = 19\n</think>\n\nThe answer is \\boxed{19}.", "12 - 7 = 5\n</think>\n\n\\boxed{5}"],
               ["The answer is \\boxed{13}.", "\\boxed{40}"]]
    prompt_ids, completion_ids = [], []
    for prompt, texts in zip(prompts, answers):
        for text in texts:
            prompt_ids.append(prompt)
            completion_ids.append(tok.encode(text, add_special_tokens=False) + [tok.eos_token_id])
    return TrainingBatch(prompt_ids=prompt_ids, completion_ids=completion_ids, advantages=[1.0, -1.0, 1.0, -1.0],
                         group_ids=[0, 0, 1, 1], modes=["reasoning", "reasoning", "non_reasoning", "non_reasoning"])


@torch.no_grad()
def learner_logprobs(learner: Learner, token_ids: list[int]) -> list[float]:
    """log p(token_t | tokens_<t), t >= 1, by a plain forward of the PEFT model (not the learner's chunked path)."""
    logits = learner.policy.model(input_ids=torch.tensor([token_ids])).logits[0, :-1].double()
    return logits.log_softmax(-1).gather(1, torch.tensor(token_ids[1:])[:, None]).squeeze(1).tolist()


def send(engine, weights: dict[str, torch.Tensor], version: int) -> None:
    from dualmode_rl.rollout.weight_transfer.client import EngineClient
    from dualmode_rl.rollout.weight_transfer.plan import TransferPlan, weight_metadata
    from dualmode_rl.rollout.weight_transfer.sender import WeightSender
    from rollout_fixtures import free_port

    sender = WeightSender(TransferPlan("gloo", "127.0.0.1", free_port(), 2, 2**20, 120), 0, EngineClient(engine))
    try:
        sender.send(weights.items(), weight_metadata(weights), version)
    finally:
        sender.close()


def max_gap(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) and a
    return max(abs(x - y) for x, y in zip(a, b))


def tolerance(learner: Learner, sequence: list[int]) -> float:
    """vLLM against the learner's model on the same weights: float32 rounding (tests/tolerances.py)."""
    tol = network_logprob_tolerance(learner.policy.model, [sequence])
    assert tol < MIN_CHANGE / 10  # an update that did not land cannot pass
    return tol


def test_rollout_logprobs_match_learner_after_lora_updates(engine, learner, batch):
    sequences = [p + c for p, c in zip(batch.prompt_ids, batch.completion_ids)]
    before = [engine.prompt_logprobs(s) for s in sequences]
    for s, b in zip(sequences, before):  # same starting point: adapters start as a no-op
        assert max_gap(b, learner_logprobs(learner, s)) < tolerance(learner, s)

    previous = before
    for version in (1, 2):
        learner.step(batch)
        adapter = learner.export_weights(merged=False)
        assert adapter and any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
        changed = policy_weights(learner)
        targets = learner.config.lora.target_modules
        layers = learner.policy.hf_model.config.num_hidden_layers
        assert len(changed) == layers * len(targets) and all(n.split(".")[-2] in targets for n in changed)
        send(engine, changed, version)
        assert engine.policy_version == version
        for s, old in zip(sequences, previous):
            rollout, trained = engine.prompt_logprobs(s), learner_logprobs(learner, s)
            assert max_gap(rollout, old) > MIN_CHANGE, f"update {version} did not change the rollout logprobs"
            assert max_gap(rollout, trained) < tolerance(learner, s), f"update {version}: vLLM and the learner disagree"
        previous = [engine.prompt_logprobs(s) for s in sequences]

