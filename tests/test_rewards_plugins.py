import subprocess
import sys
import textwrap

import pytest

from dualmode_rl.rewards.registry import RewardPluginError, load_reward
from dualmode_rl.rewards.types import RewardInput

ROWS = [RewardInput("x</think>\n\nabc", "reasoning", {"answer": "abc", "data_source": "toy"}),
        RewardInput("zz", "non_reasoning", {"answer": "abc", "data_source": "toy"})]


def _write(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_trl_convention_from_file(tmp_path):
    path = _write(tmp_path, "trl_reward.py", """
        def contains_answer(completions, answer, mode, **kwargs):
            return [1.0 if a in c else (None if m == "non_reasoning" else 0.0)
                    for c, a, m in zip(completions, answer, mode)]
    """)
    fn = load_reward(f"{path}:contains_answer")
    out = fn(ROWS)
    assert fn.name == "contains_answer"
    assert [o.score for o in out] == [1.0, 0.0]
    assert out[1].error == "returned None (cannot score)"



def test_trl_reward_is_handed_the_samples_mode_not_the_rows(tmp_path):
    """The filter's joint sampling scores a row's prompt in its other mode: the reward must see that mode."""
    path = _write(tmp_path, "trl_mode.py", """
        def is_reasoning(completions, mode, **kwargs):
            return [float(m == "reasoning") for m in mode]
    """)
    fn = load_reward(f"{path}:is_reasoning")
    rows = [RewardInput("x", "reasoning", {"mode": "non_reasoning"}), RewardInput("x", "non_reasoning", {"mode": "reasoning"})]
    assert [o.score for o in fn(rows)] == [1.0, 0.0]

def test_verl_convention_dict_and_async(tmp_path):
    path = _write(tmp_path, "verl_reward.py", """
        import asyncio
        async def compute_score(data_source, solution_str, ground_truth, extra_info=None):
            await asyncio.sleep(0)
            return {"score": float(ground_truth in solution_str), "source": data_source,
                    "mode": extra_info["mode"]}
    """)
    out = load_reward(f"{path}:compute_score")(ROWS)
    assert [o.score for o in out] == [1.0, 0.0]
    assert out[0].extras == {"source": "toy", "mode": "reasoning"}


def test_native_convention_from_dotted_path(tmp_path, monkeypatch):
    _write(tmp_path, "my_native_rewards.py", """
        from dualmode_rl.rewards.types import RewardOutput
        def length(inputs):
            return [RewardOutput(score=len(i.completion) / 100) for i in inputs]
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = load_reward("my_native_rewards:length")(ROWS)
    assert [o.score for o in out] == [0.14, 0.02]


def test_entry_point(tmp_path, monkeypatch):
    _write(tmp_path, "ep_rewards.py", """
        def always_half(completions, **kwargs):
            return [0.5] * len(completions)
    """)
    dist = tmp_path / "ep_rewards-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-rewards\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[dualmode_rl.rewards]\nhalf = ep_rewards:always_half\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert [o.score for o in load_reward("ep:half")(ROWS)] == [0.5, 0.5]
    assert [o.score for o in load_reward("ep:dualmode_rl.rewards:half")(ROWS)] == [0.5, 0.5]


@pytest.mark.parametrize("spec,reason", [
    ("no_such_module_xyz:fn", "No module named 'no_such_module_xyz'"),
    ("dualmode_rl.rewards.format:no_such_fn", "has no attribute 'no_such_fn'"),
    ("/nonexistent/file.py:fn", "no file"),
    ("ep:missing_reward", "no entry point 'missing_reward'"),
    ("justaname", "not a built-in"),
    ("dualmode_rl.rewards.format:END_OF_TURN", "is not callable"),
    ("dualmode_rl.rewards.math:last_boxed", "cannot tell the convention"),
])
def test_bad_plugins_fail_at_load_naming_the_spec(spec, reason):
    with pytest.raises(RewardPluginError) as info:
        load_reward(spec)
    assert spec in str(info.value) and reason in str(info.value)


def test_plugin_with_syntax_error(tmp_path):
    path = _write(tmp_path, "broken.py", "def f(completions:\n")
    with pytest.raises(RewardPluginError, match="SyntaxError"):
        load_reward(f"{path}:f")


def test_builtins_have_names():
    for name in ("math", "code", "format", "auto"):
        assert load_reward(name).name == name


def test_rewards_imports_no_other_dualmode_rl_package():
    code = ("import sys, rewards, rewards.auto, rewards.verify_file, rewards.sandbox_server, rewards.math_worker;"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'rollout', 'rl', 'orchestration', 'filtering'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
