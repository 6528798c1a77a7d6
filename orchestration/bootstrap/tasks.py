"""The built-in task suite: arithmetic word problems and small Python functions, in both modes.

Every problem carries its worked reasoning (the think block in reasoning mode) and its final answer;
the same problem can be rendered in either mode. Splits are disjoint by prompt text.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass

NAMES = ["Tom", "Ana", "Ben", "Mia", "Sam", "Lea", "Max", "Zoe", "Leo", "Eva", "Ian", "Ivy"]
OBJECTS = ["apples", "pens", "cards", "books", "coins", "eggs", "stickers", "shells", "stamps", "marbles"]
FUNCTION_NAMES = ["f", "g", "h", "calc", "solve", "func", "compute", "value", "result", "apply", "step", "make"]
DATA_SOURCE = "dualmode_rl/synthetic"


@dataclass
class Task:
    id: str
    domain: str  # "math" or "code"
    prompt: str
    reasoning: str
    solution: str  # the text after the think block
    answer: str  # math gold answer ("" for code)
    test: str  # code asserts ("" for math)
    entry_point: str  # code function name ("" for math)
    steps: int
    data_source: str = DATA_SOURCE


def _math_task(rng: random.Random, max_operand: int) -> Task:
    """The start value and every number added lie in 1..max_operand (a subtraction takes away less than the
    value); only a value within that range doubles."""
    steps = rng.choice([1, 1, 2, 2, 3])
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    value = rng.randint(2, max_operand)
    sentences = [f"{name} has {value} {obj}."]
    lines = []
    for _ in range(steps):
        kind = rng.choice(["add", "add", "sub", "mul"] if value <= max_operand else ["add", "sub", "sub"])
        if kind == "add":
            k = rng.randint(1, max_operand)
            sentences.append(rng.choice([f"{name} buys {k} more.", f"{name} finds {k} more.", f"A friend gives {name} {k} more."]))
            lines.append(f"{value}+{k}={value + k}")
            value += k
        elif kind == "sub" and value > 1:
            k = rng.randint(1, value - 1)
            sentences.append(rng.choice([f"{name} gives away {k}.", f"{name} loses {k}.", f"{name} sells {k}."]))
            lines.append(f"{value}-{k}={value - k}")
            value -= k
        else:
            sentences.append(f"Then the number of {obj} doubles.")
            lines.append(f"{value}*2={value * 2}")
            value *= 2
    sentences.append(f"How many {obj} does {name} have now?")
    return Task(
        id="", domain="math", prompt=" ".join(sentences), reasoning="\n".join(lines),
        solution=f"The answer is \\boxed{{{value}}}.", answer=str(value), test="", entry_point="", steps=steps,
    )


def _code_task(rng: random.Random) -> Task:
    fn = rng.choice(FUNCTION_NAMES)
    a, b = rng.randint(2, 20), rng.randint(1, 20)
    family = rng.randrange(6)
    if family == 0:
        arg, desc, plan, body, cases = "x", f"returns {a}*x+{b}", f"Multiply x by {a}, then add {b}.", f"{a}*x+{b}", [0, 1, 3, 7]
    elif family == 1:
        arg, desc, plan, body, cases = "x", f"returns x minus {a}", f"Subtract {a} from x.", f"x-{a}", [0, 5, 12]
    elif family == 2:
        arg, desc, plan, body, cases = "x", f"adds {a} to x and then multiplies the result by {b}", f"First x+{a}, then times {b}.", f"(x+{a})*{b}", [0, 2, 5]
    elif family == 3:
        arg, desc, plan, body, cases = "xs", f"returns the sum of the list xs times {a}", f"Sum the list, then multiply by {a}.", f"sum(xs)*{a}", [[], [1, 2], [3, 4, 5]]
    elif family == 4:
        arg, desc, plan, body, cases = "s", f"returns the string s repeated {a} times", f"Repeat s {a} times with s*{a}.", f"s*{a}", ["", "ab", "x"]
    else:
        arg, desc, plan, body, cases = "x", f"returns True if x is divisible by {a}, else False", f"Check x%{a}==0.", f"x%{a}==0", [0, a, a + 1, 2 * a]
    namespace: dict = {}
    exec(f"def {fn}({arg}):\n    return {body}\n", namespace)  # our own template, to compute expected values
    test = "\n".join(f"assert {fn}({c!r}) == {namespace[fn](c)!r}" for c in cases)
    code = f"```python\ndef {fn}({arg}):\n    return {body}\n```"
    return Task(
        id="", domain="code", prompt=f"Write a Python function {fn}({arg}) that {desc}.", reasoning=plan,
        solution=code, answer="", test=test, entry_point=fn, steps=2 if family == 2 else 1,
    )


def _split_of(prompt: str, fractions: dict[str, float]) -> str:
    """Deterministic split by prompt hash, so splits are disjoint by text whatever the sampling order."""
    u = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    edge = 0.0
    for split, share in fractions.items():
        edge += share
        if u < edge:
            return split
    return split


def generate_tasks(sizes: dict[str, int], code_share: float, seed: int, max_operand: int) -> dict[str, list[Task]]:
    """Draw unique tasks until every split has its size; `code_share` of each split is code."""
    total = sum(sizes.values())
    fractions = {split: n / total for split, n in sizes.items()}
    wanted = {
        (split, domain): round(n * (code_share if domain == "code" else 1 - code_share))
        for split, n in sizes.items() for domain in ("math", "code")
    }
    out: dict[str, list[Task]] = {split: [] for split in sizes}
    have = dict.fromkeys(wanted, 0)
    seen: set[str] = set()
    rng = random.Random(seed)
    for _ in range(50 * total):
        if have == wanted:
            break
        task = _code_task(rng) if rng.random() < code_share else _math_task(rng, max_operand)
        if task.prompt in seen:
            continue
        seen.add(task.prompt)
        key = (_split_of(task.prompt, fractions), task.domain)
        if have[key] < wanted[key]:
            task.id = f"{key[0]}-{task.domain}-{have[key]:06d}"
            have[key] += 1
            out[key[0]].append(task)
    else:
        raise RuntimeError(f"task generator exhausted: could not draw {sizes} unique tasks")
    return out


def task_rows(tasks: list[Task]) -> list[dict]:
    return [asdict(t) for t in tasks]
