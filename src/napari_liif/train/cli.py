"""``napari-liif train`` and ``napari-liif data``."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {text!r}")


def add_train_parsers(sub) -> None:
    t = sub.add_parser("train", help="train or fine-tune a LIIF model on image folders")
    t.add_argument("train_dirs", nargs="*", help="folders of training images (png, jpg, tif, npy)")
    t.add_argument("--data", default="images", choices=["images", "microscopy"],
                   help="images: the folders, bicubic LR (the paper); microscopy: generated fluorescence "
                        "scenes, camera-binned noisy LR and clean HR targets (no folders)")
    t.add_argument("-o", "--out-dir", required=True, help="run folder: checkpoints, loss.csv, val.csv")
    t.add_argument("--val-dir", help="held-out images for PSNR against bicubic")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--lr-halve-every", type=int, default=0, help="halve the rate every N steps (0: never)")
    t.add_argument("--scale", type=float, default=None, help="train at one fixed scale (the paper's ablation)")
    t.add_argument("--scale-min", type=float, default=1.0)
    t.add_argument("--scale-max", type=float, default=4.0)
    t.add_argument("--inp-size", type=int, default=48)
    t.add_argument("--n-samples", type=int, default=2304, help="target pixels per patch")
    t.add_argument("--encoder", default="edsr-baseline", choices=["edsr-baseline", "edsr", "rdn"])
    t.add_argument("--hidden", default="256,256,256,256", help="decoder hidden widths, comma separated")
    for flag in ("local-ensemble", "feat-unfold", "cell-decode"):
        t.add_argument(f"--{flag}", type=_bool, default=True, metavar="on|off")
    t.add_argument("--bilinear-residual", type=_bool, default=False, metavar="on|off",
                   help="add bilinear interpolation of the input to the output (LTE-style global residual)")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    t.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights)")
    t.add_argument("--init", help="fine-tune from this checkpoint (.pth or .safetensors)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out-dir from last.pth")
    t.add_argument("--val-every", type=int, default=500)
    t.add_argument("--save-every", type=int, default=250)
    t.add_argument("--max-minutes", type=float, default=0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--export", help="also write the model (safetensors) here at every save")
    t.add_argument("--family", default="liif", choices=["liif", "lmliif"],
                   help="liif (the paper) or lmliif (LM-LIIF: latent MLP + tiny modulated render MLP)")
    t.add_argument("--lm-hidden-dim", type=int, default=16, help="LM-LIIF render MLP width")
    t.add_argument("--lm-hidden-depth", type=int, default=6, help="LM-LIIF render MLP hidden layers")
    t.add_argument("--lm-hypernet-hidden", default="208", help="LM-LIIF latent MLP hidden widths, comma separated")
    t.add_argument("--init-encoder", help="copy the encoder weights from this checkpoint (same encoder)")
    t.add_argument("--freeze-encoder-steps", type=int, default=0, help="keep the encoder fixed for N steps")
    t.add_argument("--teacher", help="distil from this model as well as the ground truth")
    t.add_argument("--teacher-weight", type=float, default=0.5, help="share of the loss that fits the teacher")

    e = sub.add_parser("evaluate", help="PSNR/SSIM, mean bias and background noise of a model against bicubic")
    e.add_argument("images", nargs="?", help="folder of held-out high-resolution images (not with --data microscopy)")
    e.add_argument("--data", default="images", choices=["images", "microscopy"],
                   help="microscopy: the held-out generated fluorescence scenes (192 px: scales that divide 192)")
    e.add_argument("--scenes", type=int, default=8, help="with --data microscopy: how many held-out scenes (1-8)")
    e.add_argument("--kinds", default="low,noisy,binned",
                   help="with --data microscopy: which held-out sets, comma separated: low (nearly clean input), "
                        "noisy (strong noise), binned (a noisy reference binned in software), legacy (the first "
                        "model's scenes)")
    e.add_argument("--preserve-flux", nargs="?", const="exact", choices=("exact", "local"), default=None,
                   help="correct the model's output: exact (alone: the default), its area average over each input "
                        "pixel is that pixel; local, its local means are the input's (napari_liif.local_means)")
    e.add_argument("--checkpoint", help="model file (default: the bundled model)")
    e.add_argument("--scales", default="2,3,4,6,12", help="integer scales, comma separated")
    e.add_argument("--crop", type=int, default=240, help="centre crop side (0: whole images)")
    e.add_argument("--cell", default="on", choices=["on", "off", "clamp"])
    e.add_argument("--csv", help="also write the table here")

    d = sub.add_parser("data", help="rebuild the default model's training set from Debian and scikit-image")
    d.add_argument("out", help="folder for train/ and val/ (and the package cache)")


def config_from_args(args):
    from .loop import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    if not kw["train_dirs"] and kw["data"] == "images":
        raise ValueError("give one or more folders of training images, or --data microscopy")
    if kw["train_dirs"] and kw["data"] == "microscopy":
        raise ValueError(f"--data microscopy generates its data; drop the folders {' '.join(kw['train_dirs'])}")
    kw["hidden"] = [int(v) for v in args.hidden.split(",")]
    kw["lm_hypernet_hidden"] = [int(v) for v in args.lm_hypernet_hidden.split(",")]
    if not 0 <= kw["teacher_weight"] <= 1:
        raise ValueError(f"--teacher-weight must be in [0, 1], got {kw['teacher_weight']}")
    if args.scale is not None:
        kw["scale_min"] = kw["scale_max"] = args.scale
    if not kw["scale_min"] >= 1 or kw["scale_max"] < kw["scale_min"]:
        raise ValueError(f"scale range must satisfy 1 <= min <= max, got {kw['scale_min']}..{kw['scale_max']}")
    return TrainConfig(**kw)


def _check_export(path) -> None:
    """``--export`` may replace a napari-liif model file, never anything else."""
    import os

    from ..outputs import OutputError, check_folder_writable

    if path is None:
        return
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a folder; --export takes a .safetensors file name")
    if os.path.lexists(path):
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                ours = (f.metadata() or {}).get("format", "").startswith("napari-liif")
        except Exception:  # noqa: BLE001 - unreadable: certainly not a model file of ours
            ours = False
        if not ours:
            raise OutputError(f"{path}: exists and is not a napari-liif model file; --export never replaces "
                              "other files: choose another name")
    check_folder_writable(os.path.dirname(os.path.abspath(path)))


def cmd_train(args) -> int:
    from ..outputs import check_run_folder
    from .loop import train

    cfg = config_from_args(args)
    check_run_folder(cfg.out_dir, resume=cfg.resume)  # refused before any image is loaded
    _check_export(cfg.export)
    trainer = train(cfg)
    print(f"saved {trainer.out / 'last.safetensors'} at step {trainer.step}")
    return 0


def cmd_evaluate(args) -> int:
    import csv

    from ..engine import load_model
    from .evaluate import evaluate, format_floor_table, format_table, load_images

    scales = [int(v) for v in args.scales.split(",")]
    if args.csv:
        from ..outputs import check_file, check_folder_writable

        check_file(args.csv)  # our own earlier table may be replaced, nothing else
        check_folder_writable(Path(args.csv).parent)
    model = load_model(args.checkpoint)
    if args.data == "microscopy":
        rows = _evaluate_microscopy(model, args, scales)
    else:
        if not args.images:
            raise ValueError("give a folder of held-out images, or --data microscopy")
        images = load_images(args.images, crop=args.crop or None)
        if not images:
            raise ValueError(f"no images (png, jpg, tif) in {args.images}")
        rows = evaluate(model, images, scales, cell=args.cell, preserve_flux=args.preserve_flux)
        print(f"{len(images)} images, crop {args.crop or 'none'}, border of scale+6 px ignored")
    print(format_table(rows))
    if "liif_floor_pct" in rows[0]:
        print()
        print(format_floor_table(rows))
        print("low-passed: both images blurred by a Gaussian of sigma 1 output pixel first; floor: 1st percentile "
              "of the output minus the input's, % of the input's range (clean: the clean target's)")
    print("bias: mean of the output / mean of the input - 1; noise gain: high-pass energy (finer than an input "
          "pixel) in the darkest third of the target, relative to bicubic's")
    if args.csv:
        from ..outputs import atomic_file

        with atomic_file(args.csv) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


def _evaluate_microscopy(model, args, scales) -> list[dict]:
    from .evaluate import evaluate_scenes
    from .microscopy import HELD_OUT_KINDS, HELD_OUT_SEEDS, HELD_OUT_SHAPE, held_out_scenes

    if args.images:
        raise ValueError(f"--data microscopy generates its scenes; drop the folder {args.images}")
    if not 1 <= args.scenes <= len(HELD_OUT_SEEDS):
        raise ValueError(f"--scenes must be 1 to {len(HELD_OUT_SEEDS)}, got {args.scenes}")
    bad = [s for s in scales if s < 1 or HELD_OUT_SHAPE[0] % s]
    if bad:
        raise ValueError(f"--data microscopy scenes are {HELD_OUT_SHAPE[0]} px: scales must divide it, got {bad}")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in (*HELD_OUT_KINDS, "legacy")]
    if bad or not kinds:
        raise ValueError(f"--kinds takes {', '.join(HELD_OUT_KINDS)} or legacy, comma separated; got {args.kinds!r}")
    scenes = [sc for s in scales for sc in held_out_scenes(s, args.scenes, kinds=kinds)]
    print(f"{args.scenes} held-out generated scenes of {HELD_OUT_SHAPE[0]} px per set ({', '.join(kinds)}; LR: "
          "camera binning + noise, or a noisy image binned; target: clean, or the noisy image), border of "
          "scale+6 px ignored" + ({"local": ", local means kept"}.get(args.preserve_flux, ", flux preserved")
                                      if args.preserve_flux else ""))
    return evaluate_scenes(model, scenes, cell=args.cell, preserve_flux=args.preserve_flux)


def cmd_data(args) -> int:
    """Rebuild the training set in ``args.out`` (:func:`napari_liif.train.data.build_dataset`
    refuses a folder whose train/ or val/ it did not make)."""
    from .data import build_dataset

    counts = build_dataset(args.out)
    print(f"{counts['train']} training and {counts['val']} validation images in {args.out} "
          f"({counts['rejected']} rejected)")
    return 0
