"""Loads new policy weights into a running vLLM worker; runs inside vLLM's worker process.

vLLM is given this class as `worker_extension_cls`, so its methods become callable through
`LLM.collective_rpc("dualmode_rl_load_weights", args=(path,))`. Weights travel as a safetensors file (in
/dev/shm where it exists): tensors inside RPC arguments do not survive vLLM's serialisation.

Why this is more than `model.load_weights`: on the CPU backend vLLM packs every unquantized linear
layer's weight into a oneDNN / SGL handle when the model is loaded, replaces the layer's `weight` with
an empty tensor and computes from the packed copy (the LM head keeps its weight but also computes
from a packed copy). Loading into the parameters alone leaves the engine computing with the OLD
weights. So, on CPU, at the first update each packed linear gets a full-shape weight parameter back
(created by its own quant method, as at load time) refilled from the checkpoint; from then on the
model's own `load_weights` fills the parameters (it fuses q/k/v and gate/up from the Hugging Face
names) and vLLM's CPU GEMM dispatch re-packs every layer, keeping the full weight. This depends on
vLLM internals; tests/test_rollout_weight_sync.py compares logprobs with transformers after updates and
fails loudly when an upgrade changes them.
"""
from __future__ import annotations

import torch


class WeightSyncExtension:
    """Mixed into vLLM's worker class (vLLM's `worker_extension_cls` mechanism)."""

    def dualmode_rl_load_weights(self, path: str) -> int:
        from safetensors.torch import load_file

        model = self.model_runner.model
        tensors = load_file(path, device="cpu")
        if not _is_cpu_platform():
            device = next(model.parameters()).device
            model.load_weights((name, t.to(device)) for name, t in tensors.items())
            return len(tensors)
        layers = _packed_layers(model)
        if getattr(self, "_dualmode_rl_full_weights_kept", False):
            model.load_weights(tensors.items())
        else:
            _first_cpu_update(self.vllm_config, model, layers, tensors)
            self._dualmode_rl_full_weights_kept = True
        _repack(layers)
        return len(tensors)

    def dualmode_rl_reseed(self, seed: int) -> None:
        """vLLM samples from the worker's global torch RNG (per-request generators fail on CPU)."""
        torch.manual_seed(seed)

    def dualmode_rl_weight_checksum(self) -> float:
        """Sum of all parameters, for tests that want to see the update arrive."""
        return float(sum(p.double().sum() for p in self.model_runner.model.parameters()))


def _first_cpu_update(vllm_config, model: torch.nn.Module, layers: list[torch.nn.Module], tensors: dict) -> None:
    """Bring back full-shape weights (NaN-filled), load the update, and refill whatever it did not
    cover from the checkpoint on disk (then load the update again on top).

    From then on every layer keeps its full weight next to the packed copy (twice the linear weights'
    memory), so later updates may carry only some tensors (a partial state dict).
    """
    restored = [layer for layer in layers if layer.weight.numel() == 0]
    for layer in restored:
        _restore_full_weight(layer)
        layer.weight.data.fill_(float("nan"))
    model.load_weights(tensors.items())
    if not _unfilled(model, restored):
        return
    from vllm.model_executor.model_loader import get_model_loader

    loader = get_model_loader(vllm_config.load_config)
    model.load_weights(loader.get_all_weights(vllm_config.model_config, model))
    model.load_weights(tensors.items())
    unfilled = _unfilled(model, restored)
    if unfilled:
        raise RuntimeError(
            f"weight update on vLLM CPU: {unfilled[:3]} hold NaN after the update and a refill from the "
            f"checkpoint {vllm_config.model_config.model}: the update has NaN or the checkpoint is incomplete"
        )


def _unfilled(model: torch.nn.Module, restored: list[torch.nn.Module]) -> list[str]:
    ids = {id(layer) for layer in restored}
    return [name for name, m in model.named_modules() if id(m) in ids and torch.isnan(m.weight).any()]


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

    if layer.weight.numel() > 0:  # LM head / embedding: weight kept, only the packed copy is stale
        return
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
