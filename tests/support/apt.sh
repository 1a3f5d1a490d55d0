#!/bin/sh
# The Debian packages the monitoring tests run (tests/k8s/test_monitoring.py,
# tests/integration/test_observability.py): `prometheus` (prometheus and promtool) and
# `prometheus-pushgateway`; and h2load (`nghttp2-client`), the native load generator of
# benchmarks.protocols, which its smoke test runs (tests/integration/test_benchmarks.py).
# `make test` runs this first. It installs only what is missing, and
# only as root (CI runs as root on a clean Debian clone); otherwise it says what to install.
set -eu

missing=""
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    missing="$missing prometheus"
fi
if ! command -v prometheus-pushgateway >/dev/null 2>&1; then
    missing="$missing prometheus-pushgateway"
fi
if ! command -v h2load >/dev/null 2>&1; then
    missing="$missing nghttp2-client"
fi
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages:$missing; as root: apt-get install -y$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The tests start their own Prometheus and Pushgateway on free loopback ports; the packages'
# services (9090, 9091), where a service manager starts them, are not used.
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
