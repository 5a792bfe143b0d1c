"""The ``napari-liif`` command: upscale, info, view, train, data. No Qt is imported here
except by ``view``, which opens napari."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from pathlib import Path

from .io import READ_SUFFIXES


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"scale must be a number, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"scale must be a positive finite number, got {text!r}")
    return v


def _scale(text: str):
    parts = text.split(",")
    if len(parts) not in (1, 2, 3):
        raise argparse.ArgumentTypeError(f"scale must be S, SY,SX or SZ,SY,SX, got {text!r}")
    vals = [_positive_float(p) for p in parts]
    if len(vals) == 3 and vals[0] < 1:
        raise argparse.ArgumentTypeError(f"the z factor of --scale {text} is below 1: z is refined, not thinned; "
                                         "give a z factor of at least 1, or an exact depth with --size Z,Y,X")
    return vals[0] if len(vals) == 1 else tuple(vals)


def _size(text: str):
    try:
        vals = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        vals = ()
    if len(vals) not in (2, 3):
        raise argparse.ArgumentTypeError(f"size must be H,W or Z,H,W (integers), got {text!r}") from None
    if min(vals) < 1:
        raise argparse.ArgumentTypeError(f"size must be positive integers H,W or Z,H,W, got {text!r}")
    return vals


def _pair(what: str):
    def parse(text: str):
        parts = text.split(",")
        try:
            vals = tuple(float(p) for p in parts)
        except ValueError:
            vals = ()
        if len(vals) != 2 or not all(v == v and abs(v) != float("inf") for v in vals):
            raise argparse.ArgumentTypeError(f"{what} must be LOW,HIGH (two numbers), got {text!r}")
        if vals[0] > vals[1]:
            raise argparse.ArgumentTypeError(f"{what} must be LOW,HIGH with LOW <= HIGH, got {text!r}")
        if what == "percentiles" and not (0 <= vals[0] and vals[1] <= 100):
            raise argparse.ArgumentTypeError(f"percentiles must lie between 0 and 100, got {text!r}")
        return vals
    return parse


def _intensity_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--limits", type=_pair("limits"), metavar="LOW,HIGH",
                   help="data values mapped to the model's 0 and 1 (default: the robust range: the data range, "
                        "trimmed where hot pixels or other outliers lie far beyond the 0.1st/99.9th percentiles); "
                        "values outside are kept as they are, by nearest neighbour; limits under which the data "
                        "would span less than 1/100 of them are refused; negative: --limits=-5,100")
    g.add_argument("--percentiles", type=_pair("percentiles"), metavar="PLOW,PHIGH",
                   help="percentiles of the valid values (per channel) mapped to 0 and 1 instead, e.g. 0.5,99.5")


def _model_args(p: argparse.ArgumentParser, precision: str = "fp32", checkpoint: str = "default") -> None:
    p.add_argument("--checkpoint", help="a bundled model (default, fast, ...: napari-liif models), an official "
                                        f"LIIF/LMF .pth or a napari-liif .safetensors (default: {checkpoint})")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--precision", default=precision, choices=["auto", "fp32", "bf16", "fp16"],
                   help=f"numeric precision (default {precision}); auto: bf16 on CPUs with fast bf16, else fp32")
    p.add_argument("--cell", default="on", choices=["on", "off", "clamp"],
                   help="cell decoding: on (true output cell), off (input cell), clamp (never finer than x4)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="napari-liif", description="LIIF continuous super-resolution.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    up = sub.add_parser("upscale", help="upscale image files or folders",
                        epilog="Exit status: 0 all done (or skipped), 1 a file failed (the others are still "
                               "processed), 2 bad arguments or refusals found before any work (missing input, an "
                               "unsafe or unwritable output, an output too large for memory, unusable checkpoint "
                               "or device). Inputs are never overwritten; an existing output is skipped if "
                               "napari-liif wrote it from the same input and parameters (recomputed if not), else "
                               "refused unless --overwrite. Results are written under a hidden temporary name and "
                               "renamed when complete.")
    up.add_argument("inputs", nargs="+", help=f"files, folders or globs ({', '.join(READ_SUFFIXES)})")
    g = up.add_mutually_exclusive_group(required=True)
    g.add_argument("--scale", type=_scale, help="S or SY,SX (any positive number); SZ,SY,SX upscales a stack's "
                                                 "z axis too (docs/isotropic.md)")
    g.add_argument("--size", type=_size, help="H,W (or Z,H,W) output size, as the official LIIF demo")
    g.add_argument("--isotropic", type=_positive_float, nargs="?", const=1.0, default=None, metavar="S",
                   help="z factor from the stack's calibration so the output's z spacing equals its pixel size; "
                        "S (default 1) scales y and x")
    up.add_argument("-o", "--output", help="output file (one input) or folder")
    up.add_argument("--suffix", default=None, help="output name suffix when writing beside the input "
                                                   "(default: _liif_xS)")
    up.add_argument("--format", dest="fmt", choices=[s[1:] for s in READ_SUFFIXES], help="output file type")
    up.add_argument("--channel-axis", type=int, default=None,
                    help="axis of independent channels (default: a short last axis of 2 to 32, not 3 or 4, "
                         "is taken as channels)")
    up.add_argument("--overwrite", action="store_true",
                    help="replace outputs that exist, even files or zarr stores napari-liif did not write (never "
                         "an input, nor a folder that is not a zarr store)")
    up.add_argument("--preserve-flux", nargs="?", const="exact", choices=("exact", "local"), default=None,
                    help="exact (the default when given alone): make the output's area average over every input "
                         "pixel equal that pixel (exact where the input's range allows; hot pixels and other "
                         "carried values kept as they are; no value outside the input's range); local: bring the "
                         "output's local means back to the input's without its pixel-scale noise "
                         "(docs/microscopy.md); not with --dask")
    up.add_argument("--dask", action="store_true", help="chunked, out-of-core upscale to a zarr store")
    up.add_argument("--chunk", type=int, default=512, help="input chunk size (rows and cols) with --dask")
    up.add_argument("--quiet", action="store_true", help="no progress bar")
    _intensity_args(up)
    _model_args(up)

    info = sub.add_parser("info", help="describe a checkpoint")
    info.add_argument("checkpoint", nargs="?", help="bundled model name or model file (default: default)")

    sub.add_parser("models", help="list the bundled models: name, family, quality, speed")

    sample = sub.add_parser("sample", help="write a bundled sample image to a file")
    sample.add_argument("name", choices=["photo", "cells"], help="photo: RGB photograph; cells: 16-bit microscopy-like")
    sample.add_argument("output", help="file to write (.png, .tif, .npy; cells need .tif or .npy)")

    view = sub.add_parser("view", help="open napari with live LIIF zoom")
    view.add_argument("image", nargs="?", help="image file (default: the bundled sample photograph)")
    _model_args(view, precision="auto", checkpoint="chosen for the image: microscopy for single-channel, "
                                                   "the photo model for RGB; the dock says which and why")

    from .train.cli import add_train_parsers

    add_train_parsers(sub)
    return parser


def cmd_info(args) -> int:
    from .engine import load_model

    m = load_model(args.checkpoint, device="cpu")
    for k, v in m.info().items():
        print(f"{k:18s} {v}")
    for k in ("steps", "trained_on", "hardware"):
        if k in m.metadata:
            print(f"{k:18s} {m.metadata[k]}")
    return 0


def cmd_models(args) -> int:
    """One line per bundled model: name, family, decoder multiply-adds, measured quality."""
    from .bundled import BUNDLED, names
    from .engine import load_model

    present, w = names(), max(len(n) for n in BUNDLED)
    print(f"{'name':{w}s} {'family':8s} {'MAC/pixel':>10s} {'MAC/latent':>11s}  quality (gain over bicubic)")
    for name, b in BUNDLED.items():
        if name not in present:
            print(f"{name:{w}s} {b.family:8s} {'-':>10s} {'-':>11s}  (not installed: {b.filename})")
            continue
        info = load_model(name, device="cpu").info()
        print(f"{name:{w}s} {info['family']:8s} {info['macs_per_pixel']:>10,d} {info['macs_per_latent']:>11,d}  "
              f"{b.quality}")
    print("MAC/pixel: per output sample (all ensemble members); MAC/latent: once per latent and cell, "
          "shared by the samples around it")
    return 0


def cmd_sample(args) -> int:
    """Write a bundled sample; a file that already holds it is left as it is, any other file is
    refused (samples never overwrite)."""
    import numpy as np

    from . import samples
    from .io import ImageIOError, read_image, write_image
    from .outputs import check_folder_writable

    data = getattr(samples, f"sample_{args.name}")()[0][0]
    out = Path(args.output)
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; give a file name such as {out / (args.name + '.tif')}")
    if os.path.lexists(out):
        try:
            same = np.array_equal(read_image(out), data)
        except ImageIOError:
            same = False
        if same:
            print(f"{out} already holds the {args.name} sample")
            return 0
        raise ValueError(f"{out}: exists and is not the sample; choose a new file name (samples never overwrite)")
    check_folder_writable(out.parent)
    write_image(out, data)
    print(f"wrote {out} (shape {data.shape}, {data.dtype})")
    return 0


def cmd_view(args) -> int:
    from ._qt.view import run_viewer

    return run_viewer(args.image, checkpoint=args.checkpoint, device=args.device,
                      precision=args.precision, cell=args.cell)


def main(argv: list[str] | None = None) -> int:
    """Run the command; exit status 0 on success, 1 when processing a file (or the job)
    failed, 2 for bad arguments (including inputs, outputs or a checkpoint that cannot be
    used); every error is one line on stderr."""
    # OpenMP threads that spin while waiting slow the decoder's many short operations 2-3x
    # whenever anything else uses the CPU (docs/performance.md); torch reads this only when
    # it starts, so it is set here, before the first torch import, and only if unset
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    handlers = {"upscale": "napari_liif.upscale_cmd:cmd_upscale", "info": cmd_info, "models": cmd_models, "view": cmd_view,
                "sample": cmd_sample, "train": "napari_liif.train.cli:cmd_train", "data": "napari_liif.train.cli:cmd_data",
                "evaluate": "napari_liif.train.cli:cmd_evaluate"}
    with _quiet_libraries(), _terminate_as_interrupt():
        return _run(handlers[args.command], args)


@contextlib.contextmanager
def _quiet_libraries():
    """Library warnings (torch, numpy, dask) and log records (tifffile) are not ours to print:
    every problem that matters reaches the user as one line of ours, or as a result."""
    import logging

    root, null = logging.getLogger(), logging.NullHandler()
    root.addHandler(null)  # no "last resort" printing of other libraries' log records
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeHandler(null)


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP), raised like Ctrl-C so that every temporary output is removed."""


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While a command runs, Ctrl-C, SIGTERM and SIGHUP end it the same way (its temporary
    outputs removed, one line, a non-zero status), never in the middle of a step that must not
    be cut in two (:func:`napari_liif.owners.signals_held`); a signal someone chose to ignore
    (nohup) stays ignored."""
    import signal
    import threading

    from .owners import interrupt

    def handler(signum, frame):
        interrupt(KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum))

    saved = {}
    if threading.current_thread() is threading.main_thread():
        for name, default in (("SIGINT", signal.default_int_handler), ("SIGTERM", signal.SIG_DFL),
                              ("SIGHUP", signal.SIG_DFL)):
            sig = getattr(signal, name, None)
            if sig is not None and signal.getsignal(sig) is default:
                saved[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def _run(handler, args) -> int:
    # CheckpointError, ImageIOError, BatchError and OutputError are ValueErrors; nothing here
    # imports torch, so a refusal found before the work takes well under a second
    try:
        if isinstance(handler, str):
            import importlib

            mod, fn = handler.split(":")
            handler = getattr(importlib.import_module(mod), fn)
        return int(handler(args) or 0)
    except (ValueError, TypeError) as exc:
        _error(exc)
        return 2
    except BrokenPipeError:  # the reader of our output went away (e.g. | head): nothing to say
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the exit-time flush quiet
        return 0
    except (MemoryError, OSError, RuntimeError) as exc:
        _error(exc)
        return 1
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            import signal

            sig = signal.Signals(exc.args[0])
            print(f"napari-liif: stopped by {sig.name} (outputs not finished were not written)", file=sys.stderr)
            return 128 + sig.value
        print("napari-liif: interrupted (outputs not finished were not written)", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug of ours: still one line, never a traceback
        _error(RuntimeError(f"internal error, please report it: {type(exc).__name__}: {exc}"))
        return 1


def _error(exc: BaseException) -> None:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    if isinstance(exc, MemoryError) and "memory" not in text.lower():
        text = f"out of memory ({text})"
    print(f"napari-liif: error: {text}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
