# Two commands do all the set-up: `make run` and `make test` (and `make test-image`, with an engine).
# Both build the environment in .venv from the project's pinned files (requirements.lock).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Where trained models live (BentoML's model store). Override: make run BENTOML_HOME=/path
BENTOML_HOME ?= $(HOME)/bentoml
PORT ?= 3000

export BENTOML_DO_NOT_TRACK := true
export TF_CPP_MIN_LOG_LEVEL := 3

TOOLS := $(VENV)/tools

.PHONY: run test test-image test-edge test-slow lint format train bento image image-train tools packages lock python-version test-python313 clean

# The Pythons the lock covers (pyproject.toml's requires-python): make stops with one line when
# $(PYTHON) is another, before it builds anything.
SUPPORTED := 3.11 3.12 3.13
python-version:
	@v=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || \
		{ echo "make: no $(PYTHON) found; bentos needs Python 3.11, 3.12 or 3.13 (make PYTHON=python3.12 ...)"; exit 1; }; \
	case " $(SUPPORTED) " in *" $$v "*) ;; *) \
		echo "make: $(PYTHON) is Python $$v; bentos needs Python 3.11, 3.12 or 3.13 (make PYTHON=python3.12 ...)"; exit 1;; esac

# .venv holds exactly requirements.lock, every package hash-checked. uv installs it (its own
# pinned, hashed line of the lock bootstraps it with pip): about 30 s against pip's 100 s here.
# --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set, nothing would ever
# write the .pyc files, and each of the suite's many processes imported 3x slower.
UV := $(BIN)/uv
$(BIN)/.installed: requirements.lock pyproject.toml | python-version
	$(PYTHON) -m venv $(VENV)
	awk '/^uv==/ {p = 1; print; next} p && /^ / {print; next} {p = 0}' requirements.lock > $(VENV)/uv.txt
	$(BIN)/pip install --quiet --no-deps --require-hashes -r $(VENV)/uv.txt
	$(UV) pip sync --quiet --python $(BIN)/python --require-hashes --compile-bytecode requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

# Policy tools for tests/k8s (kubernetes-validate, checkov), in a venv of their own:
# checkov pins older packaging, python-dateutil, schema and termcolor than requirements.lock.
$(TOOLS)/.installed: requirements-tools.lock $(BIN)/.installed
	$(PYTHON) -m venv --without-pip $(TOOLS)
	$(UV) pip sync --quiet --python $(TOOLS)/bin/python --require-hashes --compile-bytecode requirements-tools.lock
	touch $@

# Move every lock forward together: re-resolve uv.lock from pyproject.toml's ranges (the newest
# versions they allow), export it to the files pip and the images install, and re-resolve the
# tools. One command, one diff, one `make test`. `make lock UPGRADE=` keeps every pin that still
# fits (after an edit of pyproject.toml); `make lock UPGRADE="--upgrade-package numpy"` moves one.
UPGRADE ?= --upgrade
EXPORT := $(UV) export --quiet --frozen --no-emit-project
lock: $(BIN)/.installed
	$(UV) lock $(UPGRADE)
	$(EXPORT) --all-extras -o requirements.lock
	$(EXPORT) -o requirements-serving.lock
	$(EXPORT) --extra train -o requirements-train.lock
	$(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes $(UPGRADE) \
		requirements-tools.in -o requirements-tools.lock

tools: $(TOOLS)/.installed

# Debian's prometheus (with promtool) and prometheus-pushgateway, for the monitoring tests:
# installed when missing, as root (tests/support/apt.sh).
packages:
	sh tests/support/apt.sh

# Train the default models only when the store lacks them, then serve on :$(PORT).
run: $(BIN)/.installed
	@BENTOML_HOME=$(BENTOML_HOME) $(BIN)/python -c "import bentoml, sys; sys.exit(0 if all(bentoml.models.list(n) for n in ('rf-classifier', 'tflite-classifier')) else 1)" \
		|| BENTOML_HOME=$(BENTOML_HOME) $(BIN)/bentos train
	BENTOML_HOME=$(BENTOML_HOME) $(BIN)/bentos serve --port $(PORT)

train: $(BIN)/.installed
	BENTOML_HOME=$(BENTOML_HOME) $(BIN)/bentos train

test: $(BIN)/.installed $(TOOLS)/.installed packages lint
	$(BIN)/python -m pytest --ignore=tests/image --ignore=tests/edge -n 2 --dist loadfile --durations=15

# The image tests (tests/image): build the Bento's image with a real container engine from fresh
# models, and run each container of the prod overlay in it as the kubelet would. On a machine
# without an engine, tests/image/engine.sh (as root) installs Debian's docker.io and
# debootstrap, starts dockerd, and builds the base image locally when no registry can be reached.
test-image: $(BIN)/.installed
	tests/image/engine.sh
	$(BIN)/python -m pytest tests/image

# The edge bundle on an arm64 device (tests/edge): Debian bookworm's arm64 Python with the lock's
# numpy and ai-edge-litert, under qemu's user-mode emulation, and the C++ consumer on Arm NN.
# tests/edge/arm64.sh (as root, like test-image) installs qemu-user-static, binfmt-support and
# debootstrap when missing and builds the arm64 root once per machine (/var/cache/bentos-edge/arm64);
# tests/edge/cpp.sh installs g++ and Arm NN's packages when missing.
test-edge: $(BIN)/.installed
	tests/edge/arm64.sh
	$(BIN)/python -m pytest tests/edge

# The suite's core on Debian 13's python3.13, the newest Python the lock covers, in a container
# built from Debian's packages (tests/python.sh says which tests; as root, like test-image).
test-python313:
	tests/python.sh

# The long runs (64 clients for 60 s): not part of `make test`.
test-slow: $(BIN)/.installed $(TOOLS)/.installed
	$(BIN)/python -m pytest -m slow -s

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bento: $(BIN)/.installed
	BENTOML_HOME=$(BENTOML_HOME) $(BIN)/bentoml build .

# The image of the newest Bento: make image IMAGE=registry.example.com/team/tabular-classifier:v2
# Run from /: BentoML 1.4.40 refuses a dockerfile_template outside the working directory when
# it containerizes a Bento from its temporary folder (bentoml/BentoML#5566).
IMAGE ?= tabular-classifier:latest
image: bento
	cd / && BENTOML_HOME=$(BENTOML_HOME) $(abspath $(BIN))/bentoml containerize tabular-classifier:latest --image-tag $(IMAGE)

# The training image (bentofile-train.yaml, with TensorFlow), for the retrain CronJob.
TRAIN_IMAGE ?= tabular-classifier-train:latest
image-train: $(BIN)/.installed
	BENTOML_HOME=$(BENTOML_HOME) $(BIN)/bentoml build -f bentofile-train.yaml .
	cd / && BENTOML_HOME=$(BENTOML_HOME) $(abspath $(BIN))/bentoml containerize tabular-classifier-train:latest --image-tag $(TRAIN_IMAGE)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
