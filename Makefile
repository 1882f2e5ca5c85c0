# All set-up happens here: a fresh machine needs only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
OUT ?= out/demo

.PHONY: demo test chromium screenshots bench bench-detect bench-convert train train-seg detection-report detection-real install dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# setup.py compiles the helpers in src/neurorecon/_native.c (optional: without a C compiler the
# install goes on, and neurorecon uses its numpy paths).
$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py src/neurorecon/_native.c
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

demo: $(VENV)/.installed
	$(BIN)/python -m neurorecon.demo --out $(OUT)

# The viewer tests drive headless Chromium (Debian packages; about 420 MB, once).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	command -v chromedriver >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver)

test: $(VENV)/.dev-installed chromium
	$(BIN)/python -m pytest -n 2 src tests

# The review screenshots in docs/review.md, taken by the viewer tests.
screenshots: $(VENV)/.dev-installed chromium
	NEURORECON_SCREENSHOTS=docs/img/review $(BIN)/python -m pytest tests/test_review_browser.py

bench: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/bench_read_check.py --out docs/benchmarks.md

# Train the shipped detector (navis, from the bench extras, supplies the held-out fly neurons).
train: $(VENV)/.bench-installed
	$(BIN)/neurorecon train --out src/neurorecon/detect/models --n-train 800 --n-valid 100 --n-heldout 300 --seed 0 --rounds 200

# Train the shipped EM affinity U-Net (docs/segmentation.md, "The affinity model"): about 34 minutes
# on 2 CPU cores; --max-minutes stops it (and saves) if the machine is slower.
train-seg: $(VENV)/.installed
	$(BIN)/neurorecon train-seg -o src/neurorecon/em/models --steps 2000 --seed 0 --batch 1 --patch 128 128 16 --base 16 --lr 1e-3 --validate-every 200 --max-minutes 34

# Held-out detection and correction numbers for docs/detection.md.
detection-report: $(VENV)/.bench-installed
	$(BIN)/python -m neurorecon.detect.benchmark --n 120 --seed 12345 --out docs/detection_heldout.md
	$(BIN)/python -m neurorecon.detect.benchmark --n 60 --seed 12345 --spacing 1 --out docs/detection_heldout_1um.md

# False alerts on the real DIADEM confocal stacks' gold traces, and the model's held-out targets.
detection-real: $(VENV)/.installed
	$(BIN)/python -m neurorecon.detect.benchmark_real --out docs/detection_real.md

bench-detect: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_detect.py --out docs/benchmarks.md

# Convert a generated 2 GB volume to OME-Zarr and precomputed (kill, resume, read back).
bench-convert: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_convert.py --out docs/benchmarks.md

clean:
	rm -rf $(VENV) out .pytest_cache
