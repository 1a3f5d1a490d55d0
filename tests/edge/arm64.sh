#!/usr/bin/env bash
# An arm64 device for the edge tests (tests/edge), on this x86-64 machine: Debian bookworm's
# arm64 Python 3.11 (what a Raspberry Pi's 64-bit OS runs) under qemu's user-mode emulation,
# with numpy and ai-edge-litert's aarch64 wheels, and Arm NN for the C++ example (cpp.sh).
#
#   1. Debian's qemu-user-static, binfmt-support and debootstrap, installed when missing (as
#      root, as CI runs);
#   2. an arm64 root from debootstrap's first stage (it downloads and unpacks Debian's arm64
#      packages; nothing of arm64 runs) with python3.11 and Arm NN unpacked into it, built once
#      per machine;
#   3. the edge requirements (ai-edge-litert, numpy and what they import) for aarch64, with the
#      versions and sha256 hashes of requirements-serving.lock, nothing resolved against the index;
#   4. the device's /proc/cpuinfo: a Raspberry Pi 4's (Cortex-A72), one entry per CPU here.
#      Debian bookworm's qemu (7.2) passes the host's x86 /proc/cpuinfo through, which LiteRT's
#      CPU detection (cpuinfo, for XNNPACK) cannot parse as arm64's: the interpreter segfaults
#      while it is created. qemu opens absolute paths under -L's prefix first, so the root's
#      proc/cpuinfo is what the device reads; conftest.py emulates the same CPU (-cpu cortex-a72).
#
# binfmt-support is installed with qemu (a machine that mounts binfmt_misc then runs arm64 files
# directly), but the tests rely on no registration: binfmt_misc is not mounted on every machine
# (this one), and a registration changes it for every process. They start each program through
# qemu-aarch64-static with the root as its library prefix (-L); the Python example and the C++
# program start no other. Prints the root's path; tests/edge/conftest.py reads it.
#
# Usage: tests/edge/arm64.sh   (the root: BENTOS_EDGE_ROOT, default /var/cache/bentos-edge/arm64)
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOT=${BENTOS_EDGE_ROOT:-/var/cache/bentos-edge/arm64}
MIRROR=${BENTOS_EDGE_MIRROR:-http://deb.debian.org/debian}
# The device's Python: Debian bookworm's, as Raspberry Pi OS (bookworm, 64-bit) has it.
PYTHON_PACKAGES=python3.11-minimal,libpython3.11-minimal,libpython3.11-stdlib
# What examples/edge_predict.cpp links and loads on the device (tests/edge/cpp.sh cross-builds it
# against these): Arm NN with its TfLite parser and its NEON (CpuAcc) and reference backends,
# OpenSSL's libcrypto, nlohmann/json's headers.
CPP_PACKAGES=libarmnn-dev,libarmnntfliteparser-dev,libarmnn-cpuacc-backend22,libarmnn-cpuref-backend22,libssl-dev,nlohmann-json3-dev
# What examples/edge_predict.py imports, and what they import, as in the lock.
EDGE_PACKAGES="ai-edge-litert numpy backports-strenum flatbuffers tqdm typing-extensions protobuf ml-dtypes"

say() { echo "arm64: $*" >&2; }

missing=()
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v update-binfmts >/dev/null || missing+=(binfmt-support)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { say "needs root to install ${missing[*]}"; exit 1; }
  say "installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The root, once: debootstrap --foreign downloads every package and unpacks the essential ones
# without running any; the rest (python3.11's) are unpacked here with dpkg-deb, which runs
# nothing of theirs either. Their maintainer scripts only byte-compile and register
# alternatives, which the tests do not need.
# The stamp names the packages: a root built with other ones is built again.
STAMP="$PYTHON_PACKAGES,$CPP_PACKAGES"
if [ "$(cat "$ROOT/.bentos-root" 2>/dev/null)" != "$STAMP" ]; then
  [ "$(id -u)" = 0 ] || { say "needs root to build $ROOT"; exit 1; }
  say "building an arm64 Debian bookworm root in $ROOT (once)"
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  debootstrap --arch=arm64 --foreign --variant=minbase --include="$PYTHON_PACKAGES,$CPP_PACKAGES" \
    bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || { tail -20 "$ROOT.log" >&2; exit 1; }
  for deb in "$ROOT"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$ROOT"
  done
  mkdir -p "$ROOT/proc"
  echo "$STAMP" >"$ROOT/.bentos-root"
fi

# The device's CPU as it reports itself (rewritten each run: the count follows this machine's).
{
  for ((cpu = 0; cpu < $(nproc); cpu++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$cpu"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n'
    printf 'CPU revision\t: 3\n\n'
  done
  printf 'Revision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n'
} >"$ROOT/proc/cpuinfo.new"
mv "$ROOT/proc/cpuinfo.new" "$ROOT/proc/cpuinfo"

# The edge requirements, when the lock's versions are not there yet (a lock change reinstalls).
SITE=$ROOT/opt/bentos-edge
REQS=$(mktemp)
trap 'rm -f "$REQS"' EXIT
awk -v want=" $EDGE_PACKAGES " '
  /^[a-z0-9]/ { split($1, a, "=="); keep = index(want, " " a[1] " ") > 0 }
  keep && (/^[a-z0-9]/ || /^ /) { print }
' requirements-serving.lock >"$REQS"
[ "$(grep -c '^[a-z0-9]' "$REQS")" -eq "$(echo "$EDGE_PACKAGES" | wc -w)" ] ||
  { say "requirements-serving.lock lacks one of: $EDGE_PACKAGES"; exit 1; }
if ! cmp -s "$REQS" "$SITE/requirements.txt"; then
  [ -x .venv/bin/uv ] || { say "run make first: .venv/bin/uv installs the wheels"; exit 1; }
  say "installing the aarch64 wheels of the edge requirements into $SITE"
  rm -rf "$SITE"
  mkdir -p "$SITE"
  .venv/bin/uv pip install --quiet --target "$SITE/site" --python-version 3.11 \
    --python-platform aarch64-manylinux_2_28 --only-binary :all: --no-deps --require-hashes \
    -r "$REQS"
  cp "$REQS" "$SITE/requirements.txt"
fi
echo "$ROOT"
