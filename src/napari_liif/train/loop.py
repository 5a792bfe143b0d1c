"""Training LIIF on folders of images (the paper's recipe, sized for what the machine has)."""

from __future__ import annotations

import csv
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import models
from ..checkpoint import build, read_checkpoint, save_official, save_safetensors
from ..device import resolve_device
from ..engine import LiifModel
from ..intensity import to_unit_float
from ..io import read_image
from ..outputs import claim_run_folder
from .evaluate import EVAL_SCALES, evaluate, evaluate_scenes, format_floor_table, format_table, load_images
from .microscopy import block_flux_loss, floor_loss
from .patches import collate, min_side_for, sample_patch

# updates in a row with non-finite gradients after which a run stops (the weights would not recover)
MAX_SKIPPED = 20
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy"}


@dataclass
class TrainConfig:
    train_dirs: list[str]
    out_dir: str
    val_dir: str | None = None
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    lr_halve_every: int = 0  # 0: constant rate
    inp_size: int = 48
    scale_min: float = 1.0
    scale_max: float = 4.0
    n_samples: int = 2304
    encoder: str = "edsr-baseline"
    encoder_args: dict = field(default_factory=dict)  # e.g. {"n_resblocks": 4} for a smaller encoder
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256, 256])
    local_ensemble: bool = True
    feat_unfold: bool = True
    cell_decode: bool = True
    bilinear_residual: bool = False
    device: str = "auto"
    bf16: bool = False
    init: str | None = None
    resume: bool = False
    val_every: int = 500
    val_scales: list[int] = field(default_factory=lambda: list(EVAL_SCALES))
    val_limit: int | None = None
    save_every: int = 250
    max_minutes: float = 0  # stop (and save) after this much wall time; 0: no limit
    seed: int = 0
    export: str | None = None  # also write the safetensors here at every save (e.g. the bundled default)
    family: str = "liif"  # or "lmliif" (LM-LIIF: latent MLP + modulated render MLP)
    lm_hidden_dim: int = 16  # LM-LIIF render MLP width and depth, latent MLP hidden widths
    lm_hidden_depth: int = 6
    lm_hypernet_hidden: list[int] = field(default_factory=lambda: [208])
    init_encoder: str | None = None  # copy the encoder's weights from this checkpoint (same encoder)
    freeze_encoder_steps: int = 0  # keep the encoder fixed for the first N steps
    teacher: str | None = None  # also fit this model's output (distillation), weight teacher_weight
    teacher_weight: float = 0.5
    data: str = "images"  # or "microscopy": generated fluorescence scenes (train/microscopy.py), no folders

    def spec(self) -> dict:
        if self.family not in ("liif", "lmliif"):
            raise ValueError(f"family {self.family!r} is not one of liif, lmliif")
        args = {"encoder_spec": {"name": self.encoder, "args": {"no_upsampling": True, **self.encoder_args}},
                "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": list(self.hidden)}},
                "local_ensemble": self.local_ensemble, "feat_unfold": self.feat_unfold,
                "cell_decode": self.cell_decode}
        if self.family == "lmliif":
            d, depth = self.lm_hidden_dim, self.lm_hidden_depth
            args["imnet_spec"] = {"name": "lmmlp", "args": {"out_dim": 3, "hidden_dim": d, "hidden_depth": depth,
                                                            "mod_scale": True, "mod_shift": True}}
            args["hypernet_spec"] = {"name": "mlp", "args": {"out_dim": 2 * d * depth + d,
                                                             "hidden_list": list(self.lm_hypernet_hidden)}}
            args["mod_input"] = True
        if self.bilinear_residual:
            args["bilinear_residual"] = True
        return {"name": self.family, "args": args}


def load_training_images(dirs: list[str], min_side: int) -> list[torch.Tensor]:
    """(3, H, W) float tensors in [0, 1]; gray and 16-bit images are mapped as ``upscale`` maps them."""
    paths = sorted(p for d in dirs for p in Path(d).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no training images (png, jpg, tif, npy) found in {', '.join(map(str, dirs))}")
    out = []
    for p in paths:
        a = read_image(p)
        if a.ndim == 3 and a.shape[-1] not in (3, 4):
            raise ValueError(f"{p}: training expects 2D gray or RGB(A) images, got shape {a.shape}")
        u = to_unit_float(a[..., :3] if a.ndim == 3 else a)
        t = torch.from_numpy(np.stack([u] * 3) if u.ndim == 2 else u.transpose(2, 0, 1).copy())
        if min(t.shape[1:]) >= min_side:
            out.append(t.contiguous())
    if not out:
        raise ValueError(f"every training image is smaller than {min_side} px on a side (needed by the "
                         "largest scale); lower --scale-max or add larger images")
    return out


class Trainer:
    """Holds the model, optimiser and data; ``run()`` trains to ``config.steps``."""

    def __init__(self, cfg: TrainConfig, log=print):
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.out_dir)
        claim_run_folder(self.out, resume=cfg.resume)  # never among files a run did not make
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)  # the initial weights
        self.spec, self.step, self.skipped_in_a_row = cfg.spec(), 0, 0
        self.net = models.make(self.spec).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self._restore()
        self.teacher = self._load_teacher()
        self.rng = random.Random(cfg.seed * 1_000_003 + self.step)  # a resumed run draws new samples
        torch.manual_seed(cfg.seed * 1_000_003 + self.step)
        self.images, self.source, self.best_gain = [], None, -float("inf")
        if cfg.data == "microscopy":  # camera-like LR (binning + noise), clean HR targets
            from .microscopy import MicroscopyPatches, validation_scenes

            self.source = MicroscopyPatches(seed=cfg.seed, start=self.step * cfg.batch_size)
        elif cfg.data == "images":
            self.images = load_training_images(cfg.train_dirs,
                                               min_side_for(cfg.inp_size, (cfg.scale_min, cfg.scale_max)))
        else:
            raise ValueError(f"data must be 'images' or 'microscopy', got {cfg.data!r}")
        if cfg.val_dir:
            self.val = load_images(cfg.val_dir, limit=cfg.val_limit)
        else:  # generated microscopy runs validate on their own validation scenes
            self.val = validation_scenes() if self.source is not None and cfg.val_every else []

    def _restore(self):
        cfg, last = self.cfg, self.out / "last.pth"
        if cfg.resume and last.is_file():
            obj = torch.load(last, map_location="cpu", weights_only=True)
            self.spec = {"name": obj["model"]["name"], "args": obj["model"]["args"]}
            self.net = build(self.spec, obj["model"]["sd"], last).to(self.device).train()
            self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
            if "optimizer" in obj:
                self.opt.load_state_dict(obj["optimizer"]["sd"])
            self.step = int(obj.get("epoch", 0))
            self.log(f"resumed from {last} at step {self.step}")
        elif cfg.init:
            spec, sd, _ = read_checkpoint(cfg.init)
            self.spec = spec
            self.net = build(spec, sd, cfg.init).to(self.device).train()
            self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
            self.log(f"initialised from {cfg.init}")
        if cfg.init_encoder and not (cfg.resume and last.is_file()):
            _, sd, _ = read_checkpoint(cfg.init_encoder)
            enc = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
            try:
                self.net.encoder.load_state_dict(enc, strict=True)
            except RuntimeError as exc:
                raise ValueError(f"{cfg.init_encoder}: its encoder does not match --encoder {cfg.encoder} "
                                 f"({str(exc).splitlines()[0]})") from None
            self.log(f"encoder initialised from {cfg.init_encoder}")

    def _load_teacher(self):
        """The distillation teacher, frozen, or None."""
        if not self.cfg.teacher:
            return None
        spec, sd, _ = read_checkpoint(self.cfg.teacher)
        net = build(spec, sd, self.cfg.teacher).to(self.device).eval().requires_grad_(False)
        # the teacher's encoder can be shared while the student's is frozen and equal to it
        self._shared_encoder = all(torch.equal(a, b.to(a.device)) for a, b in
                                   zip(net.encoder.state_dict().values(), self.net.encoder.state_dict().values())) \
            if type(net.encoder) is type(self.net.encoder) else False
        self.log(f"teacher {self.cfg.teacher} (weight {self.cfg.teacher_weight}; shared encoder: {self._shared_encoder})")
        return net

    def lr_at(self, step: int) -> float:
        k = step // self.cfg.lr_halve_every if self.cfg.lr_halve_every else 0
        return self.cfg.lr * 0.5 ** k

    def batch(self) -> dict[str, torch.Tensor]:
        cfg, sr = self.cfg, (self.cfg.scale_min, self.cfg.scale_max)
        if self.source is not None:
            self.source.refresh()  # one new scene per batch
            items = [self.source.sample(cfg.inp_size, sr, cfg.n_samples, self.rng) for _ in range(cfg.batch_size)]
        else:
            items = [sample_patch(self.rng.choice(self.images), cfg.inp_size, sr, cfg.n_samples, self.rng)
                     for _ in range(cfg.batch_size)]
        return {k: v.to(self.device) for k, v in collate(items).items()}

    def train_step(self) -> float:
        self.net.train()
        b = self.batch()
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        frozen = self.step < self.cfg.freeze_encoder_steps
        self.net.encoder.requires_grad_(not frozen)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            with torch.set_grad_enabled(not frozen):
                feat = self.net.encode(b["inp"])
            pred = self._decode(self.net, feat, b)
            target = b["gt"]
            if self.teacher is not None:
                with torch.no_grad():
                    tfeat = feat.detach() if frozen and self._shared_encoder else self.teacher.encode(b["inp"])
                    tpred = self._decode(self.teacher, tfeat, b).float()
        loss = torch.nn.functional.l1_loss(pred.float(), target)
        if "block" in b:  # generated microscopy: targets in whole LR pixels, whose means must match too
            loss = loss + block_flux_loss(pred.float(), target, b["block"]) + floor_loss(pred.float(), target)
        if self.teacher is not None:
            w = self.cfg.teacher_weight
            loss = (1 - w) * loss + w * torch.nn.functional.l1_loss(pred.float(), tpred)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self._finite(loss):
            self.opt.step()
            self.skipped_in_a_row = 0
        else:  # one bad batch must not turn Adam's moments, and with them every weight, into NaN
            self.skipped_in_a_row += 1
            self.log(f"step {self.step}: non-finite loss or gradient; update skipped")
            if self.skipped_in_a_row >= MAX_SKIPPED:
                raise ValueError(f"training diverged: {MAX_SKIPPED} updates in a row had non-finite gradients "
                                 f"at step {self.step}; resume from best.safetensors with a lower --lr")
        self.step += 1
        return float(loss.detach())

    def _finite(self, loss) -> bool:
        grads = [p.grad.detach().abs().max() for p in self.net.parameters() if p.grad is not None]
        return bool(torch.isfinite(loss)) and (not grads or bool(torch.isfinite(torch.stack(grads)).all()))

    @staticmethod
    def _decode(net, feat, b):
        """A family's training forward from its latents (LIIF decodes its projection)."""
        lat = net.project(feat) if hasattr(net, "project") else feat
        return net.decode(lat, b["coord"], b["cell"], b["inp"])

    def validate(self) -> list[dict]:
        model = LiifModel(self.net, self.spec, device=self.device)  # shares (and re-evals) the weights
        if isinstance(self.val[0], dict):  # generated scenes with their own LR
            rows = evaluate_scenes(model, self.val, with_ssim=False)
        else:
            rows = evaluate(model, self.val, self.cfg.val_scales, with_ssim=False)
        self.net.train().requires_grad_(True)
        # the low-passed gain where there is one: against a noisy reference, the plain gain rewards
        # reproducing the noise (napari_liif.train.metrics.psnr_lowpass)
        lowpass = all("gain_lp_db" in r for r in rows)
        gain = float(np.mean([r["gain_lp_db" if lowpass else "gain_db"] for r in rows]))
        if gain > self.best_gain:  # best.safetensors: the model at the best validation so far
            self.best_gain = gain
            save_safetensors(self.out / "best.safetensors", self.net, self.spec, steps=str(self.step),
                             train_config=json.dumps(asdict(self.cfg)), val_gain_db=f"{gain:.3f}",
                             val_gain_of="low-passed PSNR" if lowpass else "PSNR")
        path = self.out / "val.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, ["step", "kind", "scale", "liif_psnr", "bicubic_psnr", "gain_db", "liif_bias_pct",
                                   "noise_gain", "gain_lp_db", "liif_floor_pct", "ref_floor_pct"],
                               extrasaction="ignore")
            if new:
                w.writeheader()
            for r in rows:
                w.writerow({"step": self.step, **r})
        table = format_floor_table(rows) if "liif_floor_pct" in rows[0] else format_table(rows)
        self.log(f"step {self.step} validation\n{table}")
        return rows

    def save(self):
        card = {"steps": str(self.step), "train_config": json.dumps(asdict(self.cfg))}
        save_official(self.out / "last.pth", self.net, self.spec, self.opt, epoch=self.step)
        save_safetensors(self.out / "last.safetensors", self.net, self.spec, **card)
        if self.cfg.export:
            save_safetensors(self.cfg.export, self.net, self.spec, **card)

    def run(self, progress=True) -> list[float]:
        from tqdm import tqdm

        cfg, losses = self.cfg, []
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress, desc="train", mininterval=5)
        start = time.perf_counter()
        with (self.out / "loss.csv").open("a") as lf:
            while self.step < cfg.steps:
                if cfg.max_minutes and time.perf_counter() - start > 60 * cfg.max_minutes:
                    self.log(f"time budget of {cfg.max_minutes} min reached at step {self.step}")
                    break
                t0 = time.perf_counter()
                loss = self.train_step()
                losses.append(loss)
                lf.write(f"{self.step},{loss:.6f},{time.perf_counter() - t0:.3f}\n")
                lf.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self.save()
                if self.val and cfg.val_every and self.step % cfg.val_every == 0:
                    self.validate()
        bar.close()
        self.save()
        return losses


def train(cfg: TrainConfig, progress: bool = True, log=print) -> Trainer:
    """Train (or resume/fine-tune) per ``cfg``; returns the trainer with its final model."""
    t = Trainer(cfg, log=log)
    t.run(progress)
    return t
