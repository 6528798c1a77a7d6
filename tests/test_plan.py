"""`dualmode-rl plan`: memory per GPU from a config.json written here (no weights), for the shipped
EXAONE configs (docs/gpu-cluster.md shows the same tables) and by hand for a small case."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dualmode_rl.orchestration.config import ConfigError, load_config
from dualmode_rl.orchestration.plan import GIB, ModelShape, learner_rows, plan

ROOT = Path(__file__).resolve().parents[1]
# The EXAONE 4.0 model card's shapes, as transformers' docs/source/en/model_doc/exaone4.md lists them.
EXAONE = {
    "exaone-4.0-1.2b-8gpu": dict(hidden_size=2048, num_hidden_layers=30, num_attention_heads=32, num_key_value_heads=8,
                                 head_dim=64, intermediate_size=4096, vocab_size=102400, tie_word_embeddings=True),
    "exaone-4.0-32b-32gpu": dict(hidden_size=5120, num_hidden_layers=64, num_attention_heads=40, num_key_value_heads=8,
                                 head_dim=128, intermediate_size=27392, vocab_size=102400, tie_word_embeddings=False,
                                 sliding_window=4096, sliding_window_pattern="LLLG"),
}


def model_folder(path: Path, **shape) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["Exaone4ForCausalLM"], "model_type": "exaone4",
                                                  "dtype": "bfloat16", **shape}))
    return path


def tables(text: str) -> list[str]:
    return [block for block in text.split("\n\n") if block.startswith("|")]


@pytest.mark.parametrize("name, billions", [("exaone-4.0-1.2b-8gpu", 1.28), ("exaone-4.0-32b-32gpu", 32.00)])
def test_plan_of_the_shipped_configs_is_the_guides(tmp_path, name, billions):
    folder = model_folder(tmp_path / name, **EXAONE[name])
    done = subprocess.run([str(Path(sys.executable).parent / "dualmode-rl"), "plan", ROOT / "configs" / f"{name}.yaml",
                           "--model", folder, "--gpu-memory-gib", "80"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout.strip()
    assert f"{billions:.2f}B parameters" in out and list(folder.iterdir()) == [folder / "config.json"]
    guide = (ROOT / "docs" / "gpu-cluster.md").read_text()
    assert len(tables(out)) == 2
    for table in tables(out):
        assert table in guide, f"docs/gpu-cluster.md lacks plan's table for configs/{name}.yaml:\n{table}"
    total = float(re.findall(r"\*\*([\d.]+)\*\*", out)[0])
    assert total < 80, "the shipped config must fit its 80 GiB GPUs"


def test_plan_rows_by_hand(tmp_path):
    shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 intermediate_size=128, vocab_size=100, tie_word_embeddings=True)
    folder = model_folder(tmp_path / "m", **shape)
    layer = 64 * 16 * (2 * 4 + 2 * 2) + 3 * 64 * 128 + 2 * 64 + 2 * 16  # q, k, v, o; gate, up, down; norms
    n = 2 * layer + 100 * 64 + 64  # tied embedding, final norm
    assert ModelShape.from_folder(folder).parameters() == n
    common = [f"model={folder}", "learner.num_workers=2", "learner.micro_batch_tokens=10",
              "learner.gradient_checkpointing=true", "learner.chunk_tokens=8"]
    fsdp2 = dict(learner_rows(load_config(None, common + ["learner.strategy=fsdp2"]), ModelShape.from_folder(folder)))
    ddp = dict(learner_rows(load_config(None, common), ModelShape.from_folder(folder)))
    assert fsdp2["parameters (fp32 masters, 1/2 shard)"] == 4 * n / 2 and ddp["parameters (fp32 masters)"] == 4 * n
    assert fsdp2["optimizer state (AdamW, fp32, 1/2 shard)"] == 8 * n / 2
    assert fsdp2["frozen weights (reference, bfloat16, 1/2 shard)"] == 2 * n / 2  # dtype auto: the config.json's
    per_layer = 2 * (5 * 64 + 3 * 64 + 2 * 32 + 4 * 128)
    assert fsdp2["activations (10 tokens, gradient checkpointing)"] == 10 * (2 * 64 * 2 + per_layer)
    assert fsdp2["LM head chunk (8 tokens x 100 vocab)"] == 8 * 100 * (4 + 4 + 2)
    lora = dict(learner_rows(load_config(None, common + ["learner.lora={r: 2, target_modules: [q_proj]}"]),
                             ModelShape.from_folder(folder)))
    assert lora["parameters (fp32 masters)"] == 4 * 2 * 2 * (64 + 64)  # 2 layers x r x (in + out)
    assert "frozen weights (LoRA base, bfloat16)" in lora


def test_plan_of_a_colocated_run_adds_both_sides_on_one_gpu(tmp_path):
    folder = model_folder(tmp_path / "m", **EXAONE["exaone-4.0-1.2b-8gpu"])
    cfg = load_config(None, [f"model={folder}", "rollout.placement=colocated", "rollout.num_workers=8",
                             "learner.num_workers=8", "learner.gpus_per_worker=1", "learner.strategy=fsdp2"])
    out = plan(cfg, gpu_memory_gib=80)
    learner, vllm = re.findall(r"\| \*\*total\*\* \| \*\*([\d.]+)\*\* \|", out)
    resident = sum(float(x) for x in re.findall(r"\| (?:parameters|gradients|optimizer state|frozen weights)[^|]* \| ([\d.]+) \|", out))
    together = float(re.search(r"= \*\*([\d.]+)\*\* GiB", out).group(1))
    assert abs(together - (resident + float(vllm))) <= 0.02  # each figure rounded to 0.01
    assert "= 8 GPUs" in out and float(learner) > 0  # no GPUs of the engines' own
    assert "colocated, per GPU" not in plan(load_config(None, [f"model={folder}", "learner.gpus_per_worker=1"]))


def test_plan_names_a_folder_without_config_json(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        plan(load_config(None, [f"model={tmp_path}"]))
    assert GIB == 2**30
