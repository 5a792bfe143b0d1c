#!/usr/bin/env bash
# Install napari-liif into ./.venv on Debian (run as root from the repository root).
#   bash scripts/install.sh          the plugin, napari and a Qt binding
#   bash scripts/install.sh --test   the same plus everything the test suite needs
# System packages: Python's venv, and what Qt/OpenGL need to draw (Mesa, xcb) plus Xvfb
# and xauth, so napari also runs headless.
set -euo pipefail
cd "$(dirname "$0")/.."

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    xvfb xauth libgl1-mesa-dri libegl1 libgl1 libxkbcommon-x11-0 libxkbcommon0 \
    libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
    libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libxcb-xkb1 \
    libdbus-1-3 libfontconfig1 libglib2.0-0 >/dev/null
python3 -m venv --help >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null

[ -x .venv/bin/python ] || python3 -m venv .venv
# every install below is constrained: scripts/constraints.txt excludes the PySide6 release
# that crashes long sessions, whatever asks for a Qt binding
pip_install() { .venv/bin/python -m pip install -q -c scripts/constraints.txt "$@"; }
pip_install --upgrade pip
# torch first and pinned: a CPU build of 2.13.0 is what this project is tested with
pip_install "torch==2.13.0"
if [ "${1:-}" = "--test" ]; then
    pip_install -e ".[testing]"
else
    pip_install -e ".[all]"
fi
echo "napari-liif installed in $(pwd)/.venv"
