# The two commands of the README: `make reproduce` and `make test`.
# Both create .venv if missing, install the project, and build the bundled corpus.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# CPU machines: pin the CPU build so pip never pulls a multi-GB CUDA torch.
# GPU machines: `make test TORCH_SPEC=` keeps the CUDA torch already in the venv.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,baselines,trackers
PRESET ?= quick
# The versions the suite passed with; `make test CONSTRAINTS=` resolves the newest releases.
CONSTRAINTS ?= .ci/constraints.txt
PIP_CONSTRAINTS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: setup data test reproduce lab figures clean-venv constraints

LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings

$(STAMP): pyproject.toml notebooks/jupyterlab-overrides.json $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install --quiet $(PIP_CONSTRAINTS) -e ".[$(EXTRAS)]"
	@# this venv's JupyterLab opens the notebooks' .py files as notebooks (Jupytext), not as text
	mkdir -p $(LAB_SETTINGS) && cp notebooks/jupyterlab-overrides.json $(LAB_SETTINGS)/overrides.json
	@touch $(STAMP)

data/corpus/train.jsonl: $(STAMP) toy_models/corpus.py data/corpus_manifest.json
	$(BIN)/python -m toy_models.corpus

setup: $(STAMP) data
data: data/corpus/train.jsonl

# the linter and the formatter's check (ruff, configured in pyproject.toml), then one
# pytest-xdist worker per core, one thread each (`make test TEST_JOBS=0`: one process)
TEST_JOBS ?= auto
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadgroup

reproduce: setup
	$(BIN)/scale-lab reproduce --preset $(PRESET)

figures: setup
	$(BIN)/scale-lab figures --runs data/recordings/reference --out figures

lab:
	$(MAKE) setup EXTRAS=dev,baselines,trackers,notebooks
	$(BIN)/jupyter lab notebooks/

clean-venv:
	rm -rf $(VENV)

# after a green `make test`: record the venv's versions as the tested ones (torch comes from TORCH_SPEC)
constraints:
	{ sed -n '1,3p' .ci/constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch=='; } > .ci/constraints.new
	mv .ci/constraints.new .ci/constraints.txt
