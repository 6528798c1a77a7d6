"""What every rollout engine (rollout/registry.py) shares: its checkpoint, both modes' sampling settings,
the tokenizer with its think markers, the version of the weights it holds, and how `generate` reseeds."""
from __future__ import annotations

from .modes import SamplingConfig
from .thinking_budget import load_engine_tokenizer
from .types import GenerationRequest, RolloutGroup


class EngineBase:
    def __init__(
        self,
        model_path: str,
        sampling: SamplingConfig | None = None,
        max_model_len: int = 2048,
        seed: int | None = None,
        policy_version: int = 0,  # the version of the weights in model_path (a resumed run's step)
        **settings,  # the engine's own keywords: its `_start`'s
    ):
        self.model_path = str(model_path)
        self.max_model_len = max_model_len
        self.sampling = sampling or SamplingConfig()
        self.tokenizer, self.think_markers = load_engine_tokenizer(self.model_path, self.sampling.needs_think_markers)
        self._policy_version = int(policy_version)
        self._start(seed, **settings)

    def _start(self, seed: int | None, **settings) -> None:
        """Builds the engine itself on the shared state above."""
        raise NotImplementedError

    def _reseed(self, seed: int) -> None:
        raise NotImplementedError

    def _generate(self, requests: list[GenerationRequest], greedy: bool,
                  sampling: SamplingConfig | None = None) -> list[RolloutGroup]:
        raise NotImplementedError

    @property
    def policy_version(self) -> int:
        return self._policy_version

    def generate(self, requests: list[GenerationRequest], seed: int | None = None,
                 sampling: SamplingConfig | None = None) -> list[RolloutGroup]:
        """`request.n` samples per request with the mode's sampling settings (`sampling`'s for this call
        when given: evaluation during training); groups in request order.

        With `seed`, the sampler's RNG is reset first, so the same call on the same weights gives the
        same samples (what exact resume needs)."""
        if seed is not None:
            self._reseed(int(seed))
        return self._generate(requests, greedy=False, sampling=sampling)

    def generate_greedy(self, requests: list[GenerationRequest]) -> list[RolloutGroup]:
        """One greedy (temperature 0) completion per request, for evaluation; `request.n` is ignored."""
        return self._generate(requests, greedy=True)
