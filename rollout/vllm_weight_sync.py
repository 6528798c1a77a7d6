"""Loads new policy weights into a running vLLM worker; runs inside vLLM's worker process.

Two transports share `WeightLoader` (begin -> load, load, ... -> finish), so the CPU-specific work
below lives in one place:
- the file path (`rollout.weight_transfer: file`): vLLM is given `WeightSyncExtension` as
  `worker_extension_cls`, and `LLM.collective_rpc("dualmode_rl_load_weights", args=(path,))` loads a
  safetensors file (tensors inside RPC arguments do not survive vLLM's serialisation);
- the gloo and shm engines (rollout/weight_transfer/), vLLM's weight-transfer API on CPU.

Importing this module registers both engines with vLLM's `WeightTransferEngineFactory`. vLLM
imports the `worker_extension_cls` module inside every worker process (`WorkerWrapperBase.init_worker`,
before the worker is built and its model loaded, which is when the engine is created), so the
registration is in force where the engine runs: in the spawned worker processes, whichever executor
(uniproc, multiprocessing, Ray) vLLM picked.

Why this is more than `model.load_weights`: on the CPU backend vLLM packs every unquantized linear
layer's weight into a oneDNN / SGL handle when the model is loaded, replaces the layer's `weight` with
an empty tensor and computes from the packed copy (the LM head keeps its weight but also computes
from a packed copy). Loading into the parameters alone leaves the engine computing with the OLD
weights. So, on CPU, at the first update each packed linear gets a full-shape weight parameter back
(created by its own quant method, as at load time) filled from the checkpoint on disk; from then on
the model's own `load_weights` fills the parameters (it fuses q/k/v and gate/up from the Hugging Face
names, so an update may carry any subset of tensors) and `finish` re-runs vLLM's CPU GEMM dispatch on
every packed layer, keeping the full weight. This depends on vLLM internals;
tests/test_rollout_weight_sync.py compares logprobs with transformers after updates through both
transports and fails loudly when an upgrade changes them.
"""
from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch

from .weight_transfer.plan import CPU_ENGINES


def register_cpu_engines() -> None:
    """Registers the worker side of the gloo and shm engines (lazily, by module path); idempotent."""
    from vllm.distributed.weight_transfer import WeightTransferEngineFactory

    for backend, name in CPU_ENGINES.items():
        if name not in WeightTransferEngineFactory._registry:
            WeightTransferEngineFactory.register_engine(
                name, f"dualmode_rl.rollout.weight_transfer.{backend}_engine", f"{backend.title()}WeightTransferEngine")


register_cpu_engines()


class WeightLoader:
    """One running model's update cycle: `begin()`, `load(named tensors)` any number of times, `finish()`."""

    def __init__(self, vllm_config, model: torch.nn.Module):
        self.vllm_config, self.model = vllm_config, model
        self.cpu = _is_cpu_platform()
        self.device = next(model.parameters()).device
        self.full_weights_kept = False

    def begin(self) -> None:
        if self.cpu and not self.full_weights_kept:
            _keep_full_weights(self.vllm_config, self.model, _packed_layers(self.model))
            self.full_weights_kept = True

    def load(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.model.load_weights((name, t.to(self.device)) for name, t in named_tensors)

    def finish(self) -> None:
        if self.cpu:
            _repack(_packed_layers(self.model))


_LOADERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def weight_loader(vllm_config, model: torch.nn.Module) -> WeightLoader:
    """The model's loader, shared by both transports (the full weights are restored once per model)."""
    if model not in _LOADERS:
        _LOADERS[model] = WeightLoader(vllm_config, model)
    return _LOADERS[model]


class WeightSyncExtension:
    """Mixed into vLLM's worker class (vLLM's `worker_extension_cls` mechanism)."""

    def dualmode_rl_load_weights(self, path: str) -> int:
        from safetensors.torch import load_file

        tensors = load_file(path, device="cpu")
        loader = weight_loader(self.vllm_config, self.model_runner.model)
        loader.begin()
        loader.load(tensors.items())
        loader.finish()
        return len(tensors)

    def dualmode_rl_reseed(self, seed: int) -> None:
        """vLLM samples from the worker's global torch RNG (per-request generators fail on CPU)."""
        torch.manual_seed(seed)

    def dualmode_rl_weight_checksum(self) -> float:
        """Sum of all parameters, for tests that want to see the update arrive."""
        return float(sum(p.double().sum() for p in self.model_runner.model.parameters()))


def _keep_full_weights(vllm_config, model: torch.nn.Module, layers: list[torch.nn.Module]) -> None:
    """Give every packed linear its full-shape weight back, filled from the checkpoint on disk.

    From then on every layer keeps its full weight next to the packed copy (twice the linear weights'
    memory), so an update may carry only some tensors. Restored weights start as NaN, so a checkpoint
    that does not cover them is caught here instead of computing with garbage."""
    from vllm.model_executor.model_loader import get_model_loader

    restored = [layer for layer in layers if layer.weight.numel() == 0]
    for layer in restored:
        _restore_full_weight(layer)
        layer.weight.data.fill_(float("nan"))
    if not restored:
        return
    loader = get_model_loader(vllm_config.load_config)
    model.load_weights(loader.get_all_weights(vllm_config.model_config, model))
    ids = {id(layer) for layer in restored}
    unfilled = [name for name, m in model.named_modules() if id(m) in ids and torch.isnan(m.weight).any()]
    if unfilled:
        raise RuntimeError(f"weight update on vLLM CPU: {unfilled[:3]} hold NaN after loading the checkpoint "
                           f"{vllm_config.model_config.model}: the checkpoint is incomplete or holds NaN")


def _repack(layers: list[torch.nn.Module]) -> None:
    """Re-run vLLM's CPU GEMM dispatch so the packed copies hold the new weights, keeping `weight`."""
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    for layer in layers:
        dispatch_cpu_unquantized_gemm(layer, remove_weight=False)


def _is_cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _packed_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Layers whose matmul runs from a CPU-packed copy: unquantized linears and the (untied) LM head."""
    from vllm.model_executor.layers.linear import LinearBase, UnquantizedLinearMethod
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    layers = []
    for name, module in model.named_modules():
        if not hasattr(module, "cpu_linear"):
            continue
        method = getattr(module, "quant_method", None)
        if isinstance(module, LinearBase) and isinstance(method, UnquantizedLinearMethod):
            layers.append(module)
        elif isinstance(method, UnquantizedEmbeddingMethod):
            layers.append(module)
        else:
            raise NotImplementedError(
                f"weight update on vLLM CPU: layer {name} uses {type(method).__name__}, "
                "which this updater cannot re-pack (only unquantized models are supported)"
            )
    return layers


def _restore_full_weight(layer: torch.nn.Module) -> None:
    """Give a linear whose weight was removed by CPU packing a full-shape parameter again."""
    from vllm.model_executor.layers.linear import WEIGHT_LOADER_V2_SUPPORTED, ReplicatedLinear

    method = layer.quant_method
    if isinstance(layer, ReplicatedLinear) or type(method).__name__ not in WEIGHT_LOADER_V2_SUPPORTED:
        loader = layer.weight_loader
    else:
        loader = layer.weight_loader_v2
    method.create_weights(
        layer=layer,
        input_size_per_partition=getattr(layer, "input_size_per_partition", layer.input_size),
        output_partition_sizes=layer.output_partition_sizes,
        input_size=layer.input_size,
        output_size=layer.output_size,
        params_dtype=layer.params_dtype,
        weight_loader=loader,
    )
