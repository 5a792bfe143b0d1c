"""Building and loading models from any thread, with any torch build, in napari's process too.

Models are loaded from many threads: each live-zoom controller's render thread, the widgets'
workers, dask workers, scripts. Two process-wide hazards are met here, once per process:

* **Two LLVMs in one process.** torch's default Linux wheel ships triton, whose native library
  (``libtriton.so``) carries its own copy of LLVM. Once napari has shown a canvas, Mesa's OpenGL
  driver (llvmpipe under Xvfb, in VMs and remote desktops; radeonsi on AMD GPUs) has put another
  LLVM (``libLLVM-15.so``) into the process's global symbol scope. Loading ``libtriton.so`` after
  that binds some of its LLVM's static initializers to the other LLVM's symbols, and the process
  dies inside ``dlopen`` (SIGSEGV in ``_GLOBAL__sub_I_PassBuilder.cpp``), on whichever thread
  imports triton first. torch imports triton lazily with ``torch._dynamo``, the first time one of
  its Python-implemented ops runs (building a model on the meta device with ``torch.eye`` was one;
  the models avoid them now, which also saves seconds of start-up). :func:`prepare_torch` loads
  ``libtriton.so`` with ``RTLD_DEEPBIND`` (its own symbols first) as soon as another LLVM is seen
  in the process, so a later import of triton, by torch or anyone else, binds to its own LLVM.
* **Where torch's CPU thread pool starts.** When the first parallel torch op of a process runs on
  a thread other than the main one (a model loaded by the live-zoom render thread in a napari
  session that never ran torch on its main thread), every later op on worker threads ran 10 to
  100 times slower on a busy machine (benchmarks/bench_load_where.py: a 192 x 256 LM-LIIF render
  8.7 s instead of 0.2 s, load average 17); one parallel op run on the main thread first
  prevents it. :func:`start_thread_pool` does that; the live-zoom controller and the widgets call
  it on the main thread before their threads load anything.
* **Process-wide state touched by a build.** ``with torch.device("meta")`` (how
  :func:`napari_liif.checkpoint.build` checks a file before allocating) sets a global of torch,
  and the ``auto`` precision's one-time measurement
  (:func:`napari_liif.device.cpu_bf16_speedup`) times matrix products, which another load running
  at the same time would distort. :func:`building` is one lock per process around every build and
  load (and around :func:`napari_liif.api.get_model`'s cache, so a model asked for by several
  threads at once is loaded once).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
from pathlib import Path

#: one model build or load at a time per process (re-entrant: a load builds)
_LOCK = threading.RLock()
_state = {"triton_safe": False, "pool_started": False}


def foreign_llvm() -> list[str]:
    """The LLVM libraries mapped into this process (Linux; empty elsewhere or when unreadable)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = {line.split(None, 5)[-1].strip() for line in f if "LLVM" in line}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith("libLLVM"))


def _triton_library() -> Path | None:
    """``libtriton.so`` of the installed triton, without importing triton; None if there is none."""
    try:
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder, "_C").glob("libtriton*.so"))
        if found:
            return found[0]
    return None


def prepare_torch() -> bool:
    """Make importing triton safe in this process from now on; True when it is (no triton
    installed, triton already loaded, or no other LLVM here yet to clash with). Cheap after the
    first call that loaded it; called by :func:`building`."""
    with _LOCK:
        if _state["triton_safe"]:
            return True
        if not sys.platform.startswith("linux") or "triton" in sys.modules:
            _state["triton_safe"] = True  # loaded already: it survived, nothing to isolate
            return True
        lib = _triton_library()
        if lib is None:
            _state["triton_safe"] = True
            return True
        if not foreign_llvm():
            return True  # nothing to clash with yet; checked again at the next build
        import ctypes

        try:  # dlopen only (no Python import): later imports of triton find it loaded, bound to itself
            ctypes.CDLL(str(lib), mode=os.RTLD_NOW | os.RTLD_DEEPBIND)
        except OSError:
            return False  # unloadable: torch's own import of it will fail (ImportError) the same way
        _state["triton_safe"] = True
        return True


@contextlib.contextmanager
def building():
    """Hold while building or loading a model: one at a time per process, triton made safe first."""
    with _LOCK:
        prepare_torch()
        yield


def start_thread_pool() -> None:
    """On the main thread, once per process: run one small parallel torch op, so that torch's CPU
    thread pool is started from the main thread before worker threads use torch (see above).
    Does nothing on other threads, and after the first call (about a millisecond)."""
    if _state["pool_started"] or threading.current_thread() is not threading.main_thread():
        return
    import torch

    torch.ones(1 << 18).sum()  # above torch's grain size: a parallel region on every intra-op thread
    _state["pool_started"] = True
