#!/usr/bin/env bash
# The suite on the newest Python the lock covers: Debian 13 (trixie) and its python3.13, in a
# container built from Debian's packages (tests/image/engine.sh, as the image tests build their
# base), running a copy of this checkout as a newcomer would: `make PYTHON=python3.13` builds
# .venv from requirements.lock, then pytest runs the unit layer and every integration test but
# those that need this machine's own tools: train, serve (HTTP, V2 and gRPC on real servers),
# predict, batch, retrain, the registry, reports, admission and reliability.
#
# Left to `make test` and `make test-image` on the machine's Python: the Kubernetes, image and
# monitoring layers and the tests below, which need kubectl, checkov, a container engine,
# Prometheus and the load generators (wrk, h2load).
#
# Usage: tests/python.sh [PYTEST ARGS...]   (as root, like tests/image/engine.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=bentos-python:3.13-trixie
PYTHON=python3.13
SUITE=(
  tests/unit tests/integration
  --ignore=tests/integration/test_bento.py  # bentoml build, then checkov's secrets scan
  --ignore=tests/integration/test_benchmarks.py  # wrk, h2load
  --ignore=tests/integration/test_observability.py  # Prometheus, promtool
  --ignore=tests/integration/test_jobmetrics.py  # a Pushgateway
  --ignore=tests/integration/test_monitor.py  # a Pushgateway
)
# What pip and uv download, kept between runs on this machine (the wheels for 3.13).
CACHE=${BENTOS_PYTHON_CACHE:-/var/cache/bentos-python313}

tests/image/engine.sh "$IMAGE" trixie "$PYTHON,$PYTHON-venv,make,ca-certificates,procps"
mkdir -p "$CACHE"
# The checkout as git would commit it (tracked and new files), never this machine's .venv.
copy=$(mktemp -d /tmp/bentos-python-XXXXXX)
trap 'rm -rf "$copy"' EXIT
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -f "$f" ] && mkdir -p "$copy/$(dirname "$f")" && cp -p "$f" "$copy/$f"
done
# --network host: the package index is reached from the container, and the tests' servers
# listen on its loopback (never the engine's bridge).
exec /usr/bin/docker run --rm --network host \
  -v "$copy":/src -v "$CACHE":/root/.cache -w /src \
  -e BENTOML_DO_NOT_TRACK=true -e TF_CPP_MIN_LOG_LEVEL=3 \
  "$IMAGE" sh -euc '
    python3.13 --version
    make --no-print-directory PYTHON='"$PYTHON"' .venv/bin/.installed
    exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
  ' sh "${SUITE[@]}" "$@"
