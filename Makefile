# Two entry points: `make demo` and `make test` (`make test-fast`: the unit tests only, ~2 min). All create .venv on first use.
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast clean

install: .venv/.installed

.venv/.installed: requirements/cpu.lock pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-deps -r requirements/cpu.lock
	$(PY) -m pip uninstall -y -q unirl 2>/dev/null || true  # the project's earlier name
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	$(PY) -c "import vllm, ray, trl, peft, datasets, math_verify, transformers; print('dualmode-rl environment ready')"
	touch $@

demo: install
	.venv/bin/dualmode-rl demo configs/demo.yaml

test: install
	.venv/bin/pytest -q --durations=15

test-fast: install  # no vLLM, Ray or training runs: for the edit-test loop; `make test` before a push
	.venv/bin/pytest -q -m "not slow"

clean:
	rm -rf .venv runs .cache
