#!/usr/bin/env bash
# Make a container engine ready for the image tests (tests/image), on a machine where none may be:
#   1. Debian's docker.io and debootstrap, installed when missing (as root, as CI runs);
#   2. dockerd, started when no engine answers;
#   3. the base image the Bento's Dockerfile names (BASE, default python:3.11-slim), built
#      locally from Debian packages when the engine lacks it: no registry can be reached here.
#
# Usage: engine.sh [BASE [SUITE PACKAGES]]: another image from another Debian release with other
# packages (comma-separated), as tests/python.sh builds Debian 13's python3.13 for the suite.
#
# The stand-in is a test fixture, never part of the product: on a normal machine
# `bentoml containerize` pulls the real base image (docs/deploy.md). It is labelled
# org.bentos.stand-in=true, so a real image of the same name is never replaced.
set -euo pipefail

BASE=${1:-python:3.11-slim}
SUITE=${2:-bookworm}
PACKAGES=${3:-python3.11,python3-pip,python-is-python3,ca-certificates}
# Debian's client (20.10): the newer client that may be on PATH refuses BuildKit builds without
# the buildx plugin.
DOCKER=/usr/bin/docker
LOG_DIR=${ENGINE_LOG_DIR:-/var/log}

say() { echo "engine: $*" >&2; }

missing=()
[ -x /usr/sbin/dockerd ] && [ -x "$DOCKER" ] || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { say "needs root to install ${missing[*]}"; exit 1; }
  say "installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! "$DOCKER" info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { say "no engine answers and starting dockerd needs root"; exit 1; }
  say "starting dockerd (log: $LOG_DIR/dockerd.log)"
  nohup /usr/sbin/dockerd >"$LOG_DIR/dockerd.log" 2>&1 &
  for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  "$DOCKER" info >/dev/null 2>&1 || { say "dockerd did not answer in 60 s:"; tail -20 "$LOG_DIR/dockerd.log" >&2; exit 1; }
fi

if "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
  say "base image $BASE is present"
  exit 0
fi

# The CA bundle this machine's pip trusts: pip and uv inside a build fail TLS without it.
ca=$(python3 -m pip config list 2>/dev/null | sed -n "s/^global\.cert='\(.*\)'$/\1/p" | head -1)
ca=${ca:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
[ -f "$ca" ] || { say "no CA bundle at $ca"; exit 1; }

say "building the stand-in $BASE from Debian $SUITE (debootstrap, $PACKAGES)"
work=$(mktemp -d /tmp/bentos-base-XXXXXX)
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" \
  "$SUITE" "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
root=$work/rootfs
cp "$ca" "$root/etc/ssl/certs/bentos-build-ca.crt"
# As in python:3.11-slim: pip may install into the system Python (Debian marks it externally
# managed), and no package caches, lists or docs are kept.
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/bentos-build-ca.crt' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/bentos-build-ca.crt' \
  --change 'LABEL org.bentos.stand-in=true' \
  --change 'CMD ["python3"]' \
  - "$BASE" >/dev/null
say "built $BASE ($("$DOCKER" image inspect -f '{{.Size}}' "$BASE") bytes)"
