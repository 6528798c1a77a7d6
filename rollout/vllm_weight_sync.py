"""Loads new policy weights into a running vLLM worker; runs inside vLLM's worker process.

vLLM is given this class as `worker_extension_cls`, so its methods become callable through
`LLM.collective_rpc("unirl_load_weights", args=(path,))`. Weights travel as a safetensors file (in
/dev/shm where it exists): tensors inside RPC arguments do not survive vLLM's serialisation.

Why this is more than `model.load_weights`: on the CPU backend vLLM packs every unquantized linear
layer's weight into a oneDNN / SGL handle when the model is loaded, replaces the layer's `weight` with
an empty tensor and computes from the packed copy (the LM head keeps its weight but also computes
from a packed copy). Loading into the parameters alone leaves the engine computing with the OLD
weights. So, on CPU, each packed linear gets a full-shape weight parameter back (created by its own
quant method, as at load time), the model's own `load_weights` fills it (it fuses q/k/v and gate/up
from the Hugging Face names), and the layer's quant method re-packs it. This depends on vLLM
internals; tests/test_rollout_weight_sync.py compares logprobs with transformers after updates and
fails loudly when an upgrade changes them.
"""
from __future__ import annotations

import torch


class WeightSyncExtension:
    """Mixed into vLLM's worker class (vLLM's `worker_extension_cls` mechanism)."""

    def unirl_load_weights(self, path: str) -> int:
        from safetensors.torch import load_file

        model = self.model_runner.model
        tensors = load_file(path, device="cpu")
        on_cpu = _is_cpu_platform()
        repackable = _packed_layers(model) if on_cpu else []
        for layer in repackable:
            _restore_full_weight(layer)
        device = next(model.parameters()).device
        model.load_weights((name, t.to(device)) for name, t in tensors.items())
        for layer in repackable:
            layer.quant_method.process_weights_after_loading(layer)
        return len(tensors)

    def unirl_weight_checksum(self) -> float:
        """Sum of all parameters, for tests that want to see the update arrive."""
        return float(sum(p.double().sum() for p in self.model_runner.model.parameters()))


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
