#!/usr/bin/env bash
# CI, second part: a focused run with the torch that `pip install "napari-liif[all]"` gives Linux
# users (the default CUDA wheel, with triton), besides the full suite on the pinned CPU build.
#   bash scripts/ci_torch_default.sh     (after scripts/install.sh --test; from the repository root)
# .venv-torch-default holds only that torch and what it pulls in (CUDA libraries, triton); every
# other package comes from .venv (a .pth file adds its site-packages after this venv's own), so
# the two runs differ in torch alone. No GPU is needed: the wheel runs on the CPU, triton is
# imported all the same. Measured on this project's 2-core machine, quiet: torch 2.14.1 installs in
# about 1.5 min and takes 5.5 GB; the tests take a few minutes (far longer when the machine is busy).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_DEFAULT="2.14.1"  # the newest torch pyproject.toml allows: what pip resolves for [all]
VENV=.venv-torch-default
py() { "$VENV/bin/python" "$@"; }

if ! py -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_DEFAULT')" 2>/dev/null; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    py -m pip install -q -c scripts/constraints.txt "torch==$TORCH_DEFAULT"
fi
# everything else from .venv, after this venv's own packages (so its torch wins)
main_site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
own_site=$(py -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "import site; site.addsitedir('$main_site')" > "$own_site/zz_napari_liif_main_venv.pth"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's sources, whatever .venv points at

py -c "import torch, importlib.util as u; print(f'focused run with torch {torch.__version__}',
      f'(triton: {\"yes\" if u.find_spec(\"triton\") else \"no\"})')"
# the thread-safe start (first, in a fresh process: no triton loaded before napari's canvas), then
# a handful of core engine tests: the decoders against float64 references, checkpoints, dask workers
xvfb-run -a -s "-screen 0 1280x1024x24" "$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider \
    tests/test_thread_safe_start.py
"$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider \
    tests/test_reference.py tests/test_lmliif.py tests/test_checkpoint.py tests/test_precision.py
