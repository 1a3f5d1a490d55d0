#!/usr/bin/env bash
# The C++ consumer of the edge bundle (examples/edge_predict.cpp), built for this machine with
# Debian's packages: g++, Arm NN 20.08 with its TfLite parser and reference (CpuRef) backend,
# nlohmann/json and OpenSSL's libcrypto, installed when missing (as root, as CI runs).
#
# Usage: tests/edge/cpp.sh OUT   (writes the program to OUT)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$1
PACKAGES="g++ libarmnn-dev libarmnntfliteparser-dev libarmnn-cpuref-backend22 nlohmann-json3-dev libssl-dev"

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
g++ -std=c++17 -O2 -Wall -Wextra -Werror -o "$OUT" examples/edge_predict.cpp \
  -larmnnTfLiteParser -larmnn -lcrypto
