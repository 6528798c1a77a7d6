"""A transformers `generate` engine (the `Engine` interface, rollout/types.py): for comparison and for machines
without vLLM. It takes no vLLM settings (memory share, tensor parallelism, sleep mode, weight transfer):
orchestration passes them to the vLLM engine only, and config load rejects them with `rollout.engine: hf`.

Log-prob semantics follow VllmEngine: "processed_logprobs" (default) are log_softmax of the scores
sampled from (logits / T, then top-k, then top-p, as vLLM orders them); "raw_logprobs" of the raw logits.
"""
from __future__ import annotations

import torch
from transformers import LogitsProcessorList

from .engine_base import EngineBase
from .modes import ModeSampling, SamplingConfig, check_prompt_fits, engine_seed, render_prompt_ids
from .thinking_budget import ThinkingBudgetProcessor, mark_forced, require_markers
from .types import GenerationRequest, RolloutGroup, Sample

LOGPROBS_MODES = ("raw_logprobs", "processed_logprobs")


class HfEngine(EngineBase):
    def _start(self, seed: int | None, dtype: str = "auto",  # "auto": fp32 on CPU, the checkpoint's dtype on GPU
               device: str | None = None, logprobs_mode: str = "processed_logprobs") -> None:
        from transformers import AutoModelForCausalLM

        if logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"HfEngine: logprobs_mode must be one of {LOGPROBS_MODES}, got {logprobs_mode!r}")
        self.logprobs_mode = logprobs_mode
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype == "auto":
            dtype = "float32" if self.device.type == "cpu" else "auto"
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
        self.model.to(self.device).eval()
        torch.manual_seed(engine_seed(seed, self.sampling))

    def _reseed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def _generate(self, requests: list[GenerationRequest], greedy: bool,
                  sampling: SamplingConfig | None = None) -> list[RolloutGroup]:
        """One left-padded `generate` call per mode, with `n` rows per request."""
        prompts = [render_prompt_ids(self.tokenizer, r) for r in requests]
        for r, ids in zip(requests, prompts):
            check_prompt_fits(r, ids, self.max_model_len)
        samples: list[list[Sample]] = [[] for _ in requests]
        for mode in dict.fromkeys(r.mode for r in requests):
            rows = [i for i, r in enumerate(requests) if r.mode == mode for _ in range(1 if greedy else r.n)]
            mode_sampling = (sampling or self.sampling).for_mode(mode)
            for i, sample in zip(rows, self._generate_rows([prompts[i] for i in rows], mode_sampling, greedy)):
                samples[i].append(sample)
        return [RolloutGroup(r.request_id, r.mode, p, s) for r, p, s in zip(requests, prompts, samples)]

    @torch.no_grad()
    def _generate_rows(self, prompts: list[list[int]], sampling: ModeSampling, greedy: bool) -> list[Sample]:
        width = max(len(p) for p in prompts)
        pad = self._pad_id()
        inputs = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        out = self.model.generate(inputs, attention_mask=mask, **self._generate_kwargs(sampling, greedy, width))
        steps = out.logits if self.logprobs_mode == "raw_logprobs" else out.scores
        step_logprobs = torch.stack(steps, dim=1).float().log_softmax(-1)  # [rows, new, vocab]
        new_tokens = out.sequences[:, width:]
        chosen = step_logprobs.gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        return [self._to_sample(new_tokens[i].tolist(), chosen[i].tolist(), prompts[i], sampling.thinking_budget)
                for i in range(len(prompts))]

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def _generate_kwargs(self, mode: ModeSampling, greedy: bool, prompt_len: int) -> dict:
        max_new = min(mode.max_tokens, self.max_model_len - prompt_len)
        if max_new < 1:
            raise ValueError(f"HfEngine: prompt of {prompt_len} tokens leaves no room in max_model_len={self.max_model_len}")
        sampling = dict(do_sample=False) if greedy else dict(
            do_sample=True, temperature=mode.temperature, top_p=mode.top_p, top_k=max(mode.top_k, 0))  # top_k 0: off
        if mode.thinking_budget is not None:  # forced before temperature and top-p, as in vLLM
            markers = require_markers(self.think_markers, f"at {self.model_path}")
            sampling["logits_processor"] = LogitsProcessorList([ThinkingBudgetProcessor(markers, mode.thinking_budget)])
        return dict(
            max_new_tokens=max_new,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self._pad_id(),
            return_dict_in_generate=True,
            output_logits=True,
            output_scores=True,
            **sampling,
        )

    def _to_sample(self, tokens: list[int], logprobs: list[float], prompt: list[int], budget: int | None) -> Sample:
        eos = self.tokenizer.eos_token_id
        stopped = eos in tokens
        length = tokens.index(eos) + 1 if stopped else len(tokens)  # keep the eos token, like vLLM
        tokens, logprobs = tokens[:length], logprobs[:length]
        forced, logprobs = mark_forced(prompt, tokens, logprobs, self.think_markers, budget)
        return Sample(
            token_ids=tokens,
            logprobs=logprobs,
            text=self.tokenizer.decode(tokens, skip_special_tokens=True),
            finish_reason="stop" if stopped else "length",
            policy_version=self._policy_version,
            forced_positions=forced,
        )

    @torch.no_grad()
    def prompt_logprobs(self, token_ids: list[int]) -> list[float]:
        ids = torch.tensor([token_ids], device=self.device)
        logprobs = self.model(ids).logits[0, :-1].float().log_softmax(-1)
        return logprobs.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1).tolist()

    def update_weights(self, weights: dict[str, torch.Tensor], version: int) -> None:
        own = self.model.state_dict()
        unknown = sorted(set(weights) - set(own))
        if unknown:
            raise KeyError(f"HfEngine.update_weights: names not in the model {self.model_path}: {unknown[:5]}")
        with torch.no_grad():
            for name, tensor in weights.items():
                own[name].copy_(tensor.to(own[name].device, own[name].dtype))
        self._policy_version = int(version)

    def load_weights_file(self, path: str, version: int) -> None:
        from safetensors.torch import load_file

        self.update_weights(load_file(path), version)

    def shutdown(self) -> None:
        self.model = None
