# Everything a fresh clone needs: `make test` builds .venv from nothing and runs the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint bench clean demo docs

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch (or one pulled in by another package) brings multi-GB CUDA builds.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check ssa_hf ssa_hf_cli tests benchmarks training

# The main job: train SSA and SegFormer on generated scenes (or DATA=../shared/data/camvid), compare, reload.
demo: $(STAMP)
	$(VENV)/bin/ssa-seg demo $(if $(DATA),--data $(DATA))

# The documentation site, strictly (no broken link or reference); the notebook is regenerated from the tutorial script.
docs: $(STAMP)
	$(VENV)/bin/jupytext --quiet --update --to ipynb docs/tutorials/fine_tuning.py  # --update keeps the cell ids
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) benchmarks/bench_model.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache site
