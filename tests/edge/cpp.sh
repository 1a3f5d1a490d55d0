#!/usr/bin/env bash
# The C++ consumer of the edge bundle (examples/edge_predict.cpp), built with Debian's packages:
# g++, Arm NN 20.08 with its TfLite parser, nlohmann/json and OpenSSL's libcrypto, installed when
# missing (as root, as CI runs).
#
#   tests/edge/cpp.sh OUT          for this machine (x86-64: Arm NN's reference backend)
#   tests/edge/cpp.sh OUT ROOT     for arm64, cross-built with g++-aarch64-linux-gnu against the
#                                  arm64 root of tests/edge/arm64.sh, which holds the device's
#                                  Arm NN (with its NEON backend), libcrypto and headers
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$1
ROOT=${2:-}
if [ -z "$ROOT" ]; then
  PACKAGES="g++ libarmnn-dev libarmnntfliteparser-dev libarmnn-cpuref-backend22 nlohmann-json3-dev libssl-dev"
  CXX=g++
  FLAGS=()
else
  PACKAGES="g++-aarch64-linux-gnu"
  CXX=aarch64-linux-gnu-g++
  LIB=$ROOT/usr/lib/aarch64-linux-gnu
  FLAGS=(-isystem "$ROOT/usr/include" -isystem "$ROOT/usr/include/aarch64-linux-gnu" -L"$LIB"
    -Wl,-rpath-link,"$LIB" -Wl,-rpath-link,"$ROOT/lib/aarch64-linux-gnu")
fi

missing=()
for package in $PACKAGES; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "cpp: needs root to install ${missing[*]}" >&2; exit 1; }
  echo "cpp: installing ${missing[*]}" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
"$CXX" -std=c++17 -O2 -Wall -Wextra -Werror "${FLAGS[@]}" -o "$OUT" examples/edge_predict.cpp \
  -larmnnTfLiteParser -larmnn -lcrypto
