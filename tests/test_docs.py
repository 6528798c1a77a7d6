"""The user guides in docs/ work as written: every ```bash block runs, in order, unchanged.

What the test supplies is what a reader supplies: the shell variables the guides name (`MODEL`, the
SFT checkpoint: the tiny bootstrap one; `RUN`, an output folder), `.venv/bin` first on PATH, and the
repository root as working directory. For `pip install` it also sets PIP_TARGET / PYTHONPATH to a
throwaway folder so the shared environment is not changed. Each guide runs with `set -euo pipefail`,
so any failing command fails the test; the results are then checked.

Each guide runs in its own PID namespace (when the OS allows one), so every process it starts ends
with it: the Ray guide's `ray stop` kills Ray processes by name and must not reach other Ray
instances on the machine. The Ray guide also gets its own network namespace and /tmp/ray, so the
documented default ports and Ray's session files are its own.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
GUIDES = ("ray-job.md", "custom-reward.md", "resume.md", "data.md", "custom-algorithm.md")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LOOPBACK_UP = ("import fcntl, socket, struct; s = socket.socket(); "
               "flags = struct.unpack('16sH', fcntl.ioctl(s, 0x8913, struct.pack('16sH', b'lo', 0)))[1]; "
               "fcntl.ioctl(s, 0x8914, struct.pack('16sH', b'lo', flags | 1))")  # SIOC[GS]IFFLAGS, IFF_UP


def fenced_blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == language]


def commands(script: str) -> list[str]:
    """Shell command lines: continuations joined, comments dropped, whitespace normalised."""
    joined = re.sub(r"\\\n\s*", " ", script)
    lines = [" ".join(re.sub(r"(^|\s)#.*$", "", line).split()) for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def namespace_prefix(network: bool) -> list[str] | None:
    """`unshare` arguments for a private PID (+ mount, + network) namespace, or None where not allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    prefix = [unshare, "--fork", "--kill-child", "--pid", "--mount-proc"]
    if network:
        prefix.append("--net")
    if os.geteuid() != 0:
        prefix += ["--user", "--map-root-user"]
    probe = subprocess.run(prefix + ["true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def run_guide(name: str, env: dict[str, str], private_ray: bool = False, timeout: int = 300):
    script = "set -euo pipefail\n" + "\n".join(fenced_blocks(DOCS / name, "bash"))
    prefix = namespace_prefix(network=private_ray)
    if private_ray:
        if prefix is None:
            pytest.skip("needs a private PID and network namespace (unshare), so that `ray stop` reaches only this test's Ray")
        setup = f"mkdir -p /tmp/ray && mount -t tmpfs tmpfs /tmp/ray && {sys.executable} -c \"{LOOPBACK_UP}\"\n"
        script = setup + script
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TOKENIZERS_PARALLELISM": "false",
                **env}
    full_env.pop("RAY_ADDRESS", None)
    result = subprocess.run((prefix or []) + ["bash", "-c", script], cwd=ROOT, env=full_env, capture_output=True,
                            text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"docs/{name} failed (exit {result.returncode}):\n{output[-5000:]}"
    return output


def metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---- fast checks -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", GUIDES)
def test_guide_has_commands_and_its_links_exist(name):
    path = DOCS / name
    assert fenced_blocks(path, "bash"), f"docs/{name} has no ```bash block to test"
    for target in re.findall(r"\]\((\.\./[^)#]+)\)", path.read_text()):
        assert (DOCS / target).resolve().exists(), f"docs/{name} links to missing {target}"


def test_yaml_in_the_guides_is_a_valid_config(tmp_path):
    from dualmode_rl.orchestration.config import load_config

    blocks = [b for name in GUIDES for b in fenced_blocks(DOCS / name, "yaml")]
    assert blocks
    for i, block in enumerate(blocks):
        path = tmp_path / f"block{i}.yaml"
        path.write_text(block)
        load_config(path)


def test_ray_job_script_runs_the_guide_commands():
    script = commands((ROOT / "examples" / "ray_job.sh").read_text())
    for command in commands("\n".join(fenced_blocks(DOCS / "ray-job.md", "bash"))):
        if command == "ray stop":
            assert "trap 'ray stop' EXIT" in script
        else:
            assert command in script, f"examples/ray_job.sh lacks the guide's command: {command}"


def test_example_rewards_score_by_their_convention():
    from dualmode_rl.rewards.registry import load_reward
    from dualmode_rl.rewards.types import RewardInput

    right = RewardInput("12 + 7 = 19\n</think>\n\nThe answer is \\boxed{19}.", "reasoning", {"answer": "19"})
    wrong = RewardInput("\\boxed{19}\n</think>\n\nThe answer is \\boxed{18}.", "reasoning", {"answer": "19"})
    verl = load_reward("examples/verl_style_reward.py:compute_score")
    assert [o.score for o in verl([right, wrong])] == [1.0, 0.0]
    long = RewardInput("x" * 600, "non_reasoning", {"answer": "19"})
    trl = load_reward("examples/length_penalty_reward.py:length_penalty")
    scores = [o.score for o in trl([right, long])]
    assert scores[0] > 0.9 and scores[1] == 0.0


# ---- the guides, run --------------------------------------------------------------------------

@pytest.mark.slow
def test_ray_job_guide(tmp_path, tiny_checkpoint):
    # a module Ray has already imported may carry no __spec__ (find_spec then raises): it is installed
    missing = [m for m in ("aiohttp_cors", "opencensus", "colorful", "smart_open")
               if m not in sys.modules and importlib.util.find_spec(m) is None]
    assert not missing, f"`ray job submit` needs Ray's dashboard (ray[default]); not installed: {missing}"
    run = tmp_path / "ray_run"
    output = run_guide("ray-job.md", {"MODEL": str(tiny_checkpoint), "RUN": str(run)}, private_ray=True)
    assert "succeeded" in output.lower() and "connected to Ray cluster" in output
    assert (run / "checkpoints" / "latest").read_text() == "step_000002"
    assert metric_steps(run) == [1, 2]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["train"] == "prompts.jsonl"  # a path relative to the job's working_dir was found
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["rewards/length_penalty/error_rate"] == 0.0  # and so was the reward plug-in file in it


@pytest.mark.slow
def test_custom_reward_guide(tmp_path, tiny_checkpoint):
    run, site = tmp_path / "reward_run", tmp_path / "site"
    run.mkdir()
    package = ROOT / "examples" / "reward_package"
    try:
        run_guide("custom-reward.md", {"MODEL": str(tiny_checkpoint), "RUN": str(run), "PIP_TARGET": str(site),
                                       "PYTHONPATH": str(site)})
    finally:  # what `pip install` builds in the source tree
        shutil.rmtree(package / "build", ignore_errors=True)
        for leftover in package.glob("*.egg-info"):
            shutil.rmtree(leftover, ignore_errors=True)
    scored = lambda name: [json.loads(line)["score"] for line in (run / name).read_text().splitlines()]  # noqa: E731
    assert scored("verl_scored.jsonl") == [1.0, 0.0]
    lengths = scored("length_scored.jsonl")
    assert all(0.0 < s < 1.0 for s in lengths)
    assert scored("messages_scored.jsonl") == [0.0, 1.0]  # the question's first word, "Sam", in the answer
    assert scored("think_scored.jsonl") == [0.0, 1.0]  # a closed think block: the reasoning-mode row
    assert scored("accuracy_scored.jsonl") == [1.0, 0.0]
    overlong = scored("overlong_scored.jsonl")
    assert -1.0 <= overlong[1] <= overlong[0] <= 0.0 and overlong[1] < 0.0  # the reasoning turn is the longer
    assert scored("short_scored.jsonl") == [1.0, 1.0]
    assert metric_steps(run / "train") == [1, 2]
    config = (run / "train" / "config.yaml").read_text()
    assert "verl_style_reward.py:compute_score" in config and "length_penalty_reward.py:length_penalty" in config


@pytest.mark.slow
def test_custom_algorithm_guide(tmp_path, tiny_checkpoint):
    run = tmp_path / "algorithm_run"
    run_guide("custom-algorithm.md", {"MODEL": str(tiny_checkpoint), "RUN": str(run)})
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2] and all(row["tokens_per_sequence"] > 0 for row in rows)
    config = yaml.safe_load((run / "train" / "config.yaml").read_text())
    assert config["algorithm"]["loss"] == "examples/custom_algorithm.py:token_mean_pg"
    assert config["algorithm"]["advantage"] == "examples/custom_algorithm.py:median_baseline"


@pytest.mark.slow
def test_data_guide(tmp_path, tiny_checkpoint):
    run = tmp_path / "data_run"
    run_guide("data.md", {"MODEL": str(tiny_checkpoint), "RUN": str(run)})
    assert metric_steps(run / "train") == [1, 2]
    metrics = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["rewards/accuracy_reward/error_rate"] == 0.0 for m in metrics)
    assert (run / "train" / "report.md").is_file()


@pytest.mark.slow
def test_resume_guide(tmp_path, tiny_checkpoint):
    run = tmp_path / "resume_run"
    output = run_guide("resume.md", {"MODEL": str(tiny_checkpoint), "RUN": str(run)})
    assert "resuming from" in output and (run / "checkpoints" / "latest").read_text() == "step_000004"
    assert metric_steps(run) == [1, 2, 3, 4]
    state = json.loads((run / "checkpoints" / "step_000004" / "loop_state.json").read_text())
    assert state["step"] == 4
    for part in ("policy/model.safetensors", "policy/tokenizer_config.json", "trainer/learner_state.pt",
                 "trainer/rng_rank0.pt", "metrics.jsonl"):
        assert (run / "checkpoints" / "step_000004" / part).is_file(), part
