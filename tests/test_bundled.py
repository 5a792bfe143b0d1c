"""Bundled models by name: ``load_model(name)``, ``--checkpoint NAME``, ``napari-liif models``,
and the shipped fast (LM-LIIF) model's quality on a held-out photograph."""

from __future__ import annotations

import numpy as np
import pytest

from napari_liif import bundled
from napari_liif.checkpoint import CheckpointError
from napari_liif.cli import main
from napari_liif.engine import load_model
from napari_liif.train.metrics import psnr

pytestmark = pytest.mark.usefixtures("single_thread")


def test_every_bundled_model_is_installed_and_loads_as_its_family():
    assert set(bundled.names()) == set(bundled.BUNDLED) == {"default", "fast", "microscopy", "fast-microscopy"}
    for name, b in bundled.BUNDLED.items():
        m = load_model(name, device="cpu")
        assert m.spec["name"] == b.family == type(m.family).name, name
        assert m.name == b.filename
    assert load_model(None, device="cpu").name == bundled.BUNDLED[bundled.DEFAULT].filename


def test_missing_bundled_file_and_unknown_names_are_one_line_errors(monkeypatch, tmp_path):
    monkeypatch.setattr(bundled, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError) as err:
        load_model("fast", device="cpu")
    msg = str(err.value)
    assert "lmliif-edsr-baseline-fast.safetensors" in msg and "reinstall" in msg and "\n" not in msg
    with pytest.raises(CheckpointError) as err:
        bundled.resolve("fastest")
    assert "neither a bundled model nor a file" in str(err.value) and "default, fast" in str(err.value)


def test_cli_checkpoint_by_name_equals_the_api(tmp_path):
    from napari_liif.io import read_image, write_image

    rng = np.random.default_rng(1)
    src = write_image(tmp_path / "in.png", (rng.random((20, 24, 3)) * 255).astype(np.uint8))
    out = tmp_path / "out.png"
    assert main(["upscale", str(src), "--scale", "2", "--checkpoint", "fast", "-o", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    import napari_liif

    want = napari_liif.upscale(read_image(src), scale=2, model=load_model("fast", device="cpu"))
    assert np.array_equal(read_image(out), want)


def test_models_command_lists_family_and_work(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln.split() for ln in lines[1:] if ln.split() and ln.split()[0] in bundled.BUNDLED}
    assert rows["default"][1] == "liif" and rows["fast"][1] == "lmliif"
    # decoder work per output pixel: LIIF's exact path 4 x 198,400; LM-LIIF 4 x 1,648
    assert rows["default"][2] == "793,600" and rows["fast"][2] == "6,592"
    assert rows["fast"][3] == "163,488"


def held_out_camera(scale):
    from skimage import data

    from napari_liif.train.evaluate import bicubic_upscale, make_lr

    hr = data.camera()[128:320, 160:352].astype(np.float32) / 255  # kept out of the training set
    hr = np.stack([hr] * 3, -1)
    lr = make_lr(hr, scale)
    return hr, lr, bicubic_upscale(lr, hr.shape[:2])


@pytest.mark.parametrize("scale,margin", [(2, 1.5), (4, 1.0)])
def test_shipped_fast_model_beats_bicubic(scale, margin):
    hr, lr, base = held_out_camera(scale)
    pred = load_model("fast", device="cpu").encode(lr).render(shape=hr.shape[:2])
    gain = psnr(pred, hr, shave=scale + 6) - psnr(base, hr, shave=scale + 6)
    print(f"shipped fast model on camera x{scale}: {gain:+.2f} dB over bicubic")
    assert gain > margin, f"fast model only {gain:+.2f} dB over bicubic at x{scale}"
