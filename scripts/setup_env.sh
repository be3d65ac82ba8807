#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and print its path on the last line.
# The venv lives outside the checkout, keyed by the hash of the requirement files, so CI and
# later runs reuse it. Installs the Debian FFmpeg libraries that torchcodec (datasets' decoder) needs, and
# Chromium + ChromeDriver for the demo's headless-browser test.
# Usage: VENV=$(bash scripts/setup_env.sh | tail -1)
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=${NSER_REQUIREMENTS:-requirements-dev.txt}
hash=$(cat requirements.txt requirements-dev.txt bench/requirements.txt demo/requirements.txt demo/requirements-test.txt | sha256sum | cut -c1-12)
VENV=${NSER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/nser/venv-$hash}

if ! ldconfig -p | grep -q libavformat.so.59 || ! command -v ffmpeg >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "installing FFmpeg (torchcodec, MELD extraction) and Chromium + ChromeDriver (the demo's browser test) with apt" >&2
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends libavutil57 libavcodec59 libavformat59 \
    libavdevice59 libavfilter8 libswscale6 libswresample4 ffmpeg chromium chromium-driver >/dev/null
fi

if [ ! -f "$VENV/.complete" ]; then
  echo "creating venv $VENV (first run: several minutes, torch is a large download)" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q -r "$REQ" >&2
  touch "$VENV/.complete"
fi
echo "$VENV"
