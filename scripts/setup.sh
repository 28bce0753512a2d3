#!/usr/bin/env bash
# One-step set-up of napari-vmunet on a fresh machine.
#
#   bash scripts/setup.sh           napari + the plugin, for using it
#   bash scripts/setup.sh --test    the plugin built as a wheel + test tools
#
# It installs the system libraries napari/Qt need (Debian/Ubuntu, when it
# may use apt), creates the virtual environment .venv, installs PyTorch
# first (the CPU build 2.13.0 when no torch is present, so pip does not pull
# a multi-GB CUDA build by accident; set TORCH_SPEC to choose another), then
# the plugin.  Re-running it is cheap: every step is skipped when done.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=use
[ "${1:-}" = "--test" ] && mode=test
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

# --- system libraries for Qt/OpenGL and a virtual X display (Xvfb) ---------
apt_packages="xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri
  libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
  libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0
  libxcb-xinerama0 libxcb-xkb1 libxcb-sync1 libfontconfig1 libdbus-1-3
  libglib2.0-0 fonts-dejavu-core"
if command -v apt-get >/dev/null 2>&1; then
  missing=$(for p in $apt_packages; do
    dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    sudo=""
    [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
    if [ "$(id -u)" = 0 ] || [ -n "$sudo" ]; then
      echo "== apt: installing $(echo $missing | wc -w) system packages for Qt/Xvfb"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        --no-install-recommends $missing >/dev/null
    else
      echo "!! cannot run apt-get; napari may need: $missing" >&2
    fi
  fi
fi

# --- virtual environment and PyTorch ---------------------------------------
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip
if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
  echo "== installing $TORCH_SPEC"
  pip install -q "$TORCH_SPEC"
fi

# --- the plugin -------------------------------------------------------------
if [ "$mode" = test ]; then
  # test what users get: the built wheel, not the source tree
  rm -rf dist
  pip install -q build
  "$VENV/bin/python" -m build --wheel --outdir dist . >/dev/null
  wheel=$(ls dist/napari_vmunet-*.whl)
  echo "== installing $wheel with the test extras"
  pip install -q --force-reinstall --no-deps "$wheel"
  pip install -q "${wheel}[test]"
else
  echo "== installing napari-vmunet with napari (Qt6)"
  pip install -q ".[all]"
fi
echo "== ready: $("$VENV/bin/napari-vmunet" --version)"
