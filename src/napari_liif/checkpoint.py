"""Reading and writing model files.

Two formats:

* **official LIIF ``.pth``** (``torch.save`` of ``{'model': {'name', 'args', 'sd'}, ...}``),
  always read with ``torch.load(..., weights_only=True)`` so a file can never execute code;
  optimizer state and epoch are ignored;
* **ours**: a ``.safetensors`` file whose metadata holds the spec as JSON (key ``spec``),
  plus free-form ``card`` metadata.

Every failure becomes a ``CheckpointError`` with one line naming the file and what was expected.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from . import models, validate
from .outputs import atomic_file


#: model families a checkpoint may hold (the ``name`` of its spec)
FAMILIES = ("liif", "lmliif")


class CheckpointError(ValueError):
    """A model file that is missing, unreadable or not a LIIF checkpoint."""


def _fail(path, msg: str) -> CheckpointError:
    return CheckpointError(f"{path}: {msg}")


def read_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, str]]:
    """Return ``(spec, state_dict, metadata)`` from an official ``.pth`` or our ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file (expected an official LIIF .pth or a napari-liif .safetensors)")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _read_official(path)


def _read_official(path: Path):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's text here advises retrying with weights_only=False, which would run whatever
        # the file holds: report only its specific reason (e.g. "Unsupported operand 95",
        # "unsupported GLOBAL posix.system") and that nothing was executed
        lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
        why = [ln for ln in lines if not ln.startswith(("Please file an issue", "Check the documentation"))]
        raise _fail(path, "not a LIIF checkpoint: its pickle is corrupt or holds objects other than tensors "
                          f"and plain containers ({(why[0] if why else type(exc).__name__)[:150]}); refused, "
                          "nothing in it was run; expected an official LIIF .pth saved by torch.save, "
                          "or a .safetensors file") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        # first sentence only: torch's zip errors go on with generic advice
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise _fail(path, f"not a readable torch checkpoint ({first}); expected an official LIIF .pth "
                          "saved by torch.save, or a .safetensors file") from None
    model = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(model, dict) or not {"name", "args", "sd"} <= set(model):
        keys = sorted(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
        raise _fail(path, f"not a LIIF checkpoint: expected {{'model': {{'name', 'args', 'sd'}}}}, found {keys}")
    if not isinstance(model["args"], dict) or not isinstance(model["sd"], dict):
        raise _fail(path, "not a LIIF checkpoint: expected a dict 'args' and a state dict 'sd' under 'model', "
                          f"found {type(model['args']).__name__} and {type(model['sd']).__name__}")
    spec = {"name": model["name"], "args": model["args"]}
    return spec, dict(model["sd"]), {"format": "official-pth"}


def _read_safetensors(path: Path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _fail(path, f"not a readable safetensors file ({exc})") from None
    if "spec" not in meta:
        raise _fail(path, "safetensors file has no 'spec' metadata; expected one written by napari-liif")
    try:
        spec = json.loads(meta["spec"])
    except json.JSONDecodeError as exc:
        raise _fail(path, f"the 'spec' metadata is not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("args"), dict):
        raise _fail(path, "the 'spec' metadata is not a model spec; expected a JSON object "
                          "{\"name\": ..., \"args\": {...}}")
    return spec, sd, meta


def build(spec: dict, state_dict: dict[str, torch.Tensor], path: Any = "<memory>") -> torch.nn.Module:
    """Build the model of ``spec`` and load ``state_dict`` strictly.

    Nothing is allocated before the spec has been checked against the weights: its numbers
    must be plausible layer sizes for these tensors (:func:`check_spec_sizes`), and the model it
    describes, built first on the ``meta`` device (shapes only, no memory), must have exactly the
    file's tensor names, shapes and kinds of dtype (floating-point weights stay floating-point: any
    float width; integer buffers their own dtype), all finite.
    """
    if not isinstance(spec, dict) or spec.get("name") not in FAMILIES:
        name = spec.get("name") if isinstance(spec, dict) else spec
        raise _fail(path, f"model name is {name!r}; supported: {', '.join(FAMILIES)}")
    check_spec_sizes(spec, state_dict, path)
    try:
        with torch.device("meta"):
            shell = models.make(spec)
    except Exception as exc:  # noqa: BLE001 - a spec is data from a file: any failure is that file's
        raise _fail(path, f"cannot build the model its spec describes ({_first_line(exc)})") from None
    _check_weights(shell, state_dict, path)
    try:
        net = models.make(spec)
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise _fail(path, "weights do not match the spec: " + " ".join(lines[1:3])[:300]) from None
    except Exception as exc:  # noqa: BLE001 - as above
        raise _fail(path, f"cannot build the model its spec describes ({_first_line(exc)})") from None
    return net.eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def check_spec_sizes(spec: dict, state_dict: dict, path: Any = "<memory>") -> None:
    """:func:`napari_liif.validate.check_spec_sizes` on a loaded state dict, as a CheckpointError."""
    shapes = {k: tuple(t.shape) for k, t in state_dict.items() if isinstance(t, torch.Tensor)}
    try:
        validate.check_spec_sizes(spec, shapes, len(state_dict))
    except ValueError as exc:
        raise _fail(path, str(exc)) from None


def _check_weights(shell: torch.nn.Module, state_dict: dict, path: Any) -> None:
    """The file's tensors must be exactly the spec's (names, shapes and dtypes), real and finite."""
    want = shell.state_dict()
    missing, unexpected = sorted(set(want) - set(state_dict)), sorted(set(state_dict) - set(want))
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"] if missing else [])
        parts += [f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}"] if unexpected else []
        raise _fail(path, "weights do not match the spec: " + "; ".join(parts))
    for k, t in want.items():
        got = state_dict[k]
        if not isinstance(got, torch.Tensor):
            raise _fail(path, f"weights do not match the spec: {k} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(t.shape):
            raise _fail(path, f"weights do not match the spec: size mismatch for {k}: the file holds "
                              f"{tuple(got.shape)}, the spec asks for {tuple(t.shape)}")
        if got.is_complex() or got.dtype == torch.bool:
            raise _fail(path, f"weights are broken: {k} has dtype {got.dtype}, not a real number type")
        if t.is_floating_point() != got.is_floating_point() or (not t.is_floating_point() and got.dtype != t.dtype):
            want_dtype = f"a floating-point dtype ({t.dtype})" if t.is_floating_point() else str(t.dtype)
            raise _fail(path, f"weights do not match the spec: {k} has dtype {got.dtype}, the spec asks for "
                              f"{want_dtype}; the file is damaged or was not saved from this model")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise _fail(path, f"weights are broken: {k} holds non-finite values (NaN or inf)")


def save_safetensors(path: str | Path, net: torch.nn.Module, spec: dict, **card: str) -> Path:
    """Write ``net`` as our safetensors format (fp32 unless the tensors are already lower)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {"spec": json.dumps(spec), "format": "napari-liif-1", **{k: str(v) for k, v in card.items()}}
    with atomic_file(path, record=False) as tmp:  # a hidden temporary name, renamed when written
        save_file(sd, str(tmp), metadata=meta)
        tmp.chmod(0o644)  # safetensors creates it owner-only; model files are meant to be shared
    return path


def save_official(path: str | Path, net: torch.nn.Module, spec: dict, optimizer=None, epoch: int = 0) -> Path:
    """Write the official LIIF layout, loadable by the official code and by us."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    obj = {"model": {"name": spec["name"], "args": spec["args"], "sd": sd}, "epoch": epoch}
    if optimizer is not None:
        obj["optimizer"] = {"name": "adam", "args": {}, "sd": optimizer.state_dict()}
    with atomic_file(path, record=False) as tmp:
        torch.save(obj, tmp)
    return path


def decoder_macs(net: torch.nn.Module) -> dict[str, int]:
    """Multiply-adds of the decoder as our engine runs it: ``per_pixel`` (every ensemble member
    of one output sample) and ``per_latent`` (work done once per latent and cell, shared by
    the samples around it: LIIF's first-layer projection, LM-LIIF's latent MLP)."""
    if hasattr(net, "macs"):
        return net.macs()
    lins = [m for m in net.imnet.modules() if isinstance(m, torch.nn.Linear)]
    members = len(net.shifts()[0])
    total = sum(m.in_features * m.out_features for m in lins)
    per_latent = net.feat_dim * lins[0].out_features
    return {"per_latent": per_latent, "per_pixel": members * (total - per_latent)}


def describe(spec: dict, net: torch.nn.Module) -> dict[str, Any]:
    """Architecture summary for ``napari-liif info``."""
    args = spec.get("args", {})
    enc = args.get("encoder_spec", {})
    imnet = args.get("imnet_spec", {}).get("args", {})
    hidden = imnet.get("hidden_list")
    if spec.get("name") == "lmliif":  # render MLP width x depth, and the latent MLP's widths
        hidden = {"render": [imnet.get("hidden_dim", 16)] * imnet.get("hidden_depth", 6),
                  "latent_mlp": args.get("hypernet_spec", {}).get("args", {}).get("hidden_list"),
                  "mod_input": net.mod_input}
    macs = decoder_macs(net)
    return {
        "family": spec.get("name"),
        "encoder": enc.get("name"),
        "encoder_args": enc.get("args", {}),
        "decoder_hidden": hidden,
        "macs_per_pixel": macs["per_pixel"],
        "macs_per_latent": macs["per_latent"],
        "local_ensemble": net.local_ensemble,
        "feat_unfold": net.feat_unfold,
        "cell_decode": net.cell_decode,
        "bilinear_residual": net.bilinear_residual,
        "receptive_radius": net.encoder.receptive_radius,
        "parameters": sum(p.numel() for n, p in net.named_parameters() if "mean" not in n),
    }
