"""The ``napari-liif`` command end to end on small images: ``upscale`` and ``info``.

Exit status: 0 success, 1 a file (or the job) failed, 2 bad arguments; every error is one
line on stderr. Results are compared with the Python API on the same checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_line, run
from helpers_models import write_tiny_checkpoint

from napari_liif.api import upscale
from napari_liif.engine import load_model
from napari_liif.io import read_image, write_image


pytestmark = pytest.mark.usefixtures("single_thread_module")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """This module's model (overrides conftest's): ``helpers_models.write_tiny_checkpoint(seed=5)``."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", seed=5)


@pytest.fixture
def images(tmp_path, input_guard):
    """in/ with an RGB PNG, a 12-bit TIFF, a float TIFF and a float64 NPY (12 x 17), guarded:
    a test that changes one of them fails."""
    g = np.random.default_rng(9)
    d = tmp_path / "in"
    write_image(d / "rgb.png", g.integers(0, 256, (12, 17, 3), dtype=np.uint8))
    write_image(d / "u16.tif", g.integers(50, 4096, (12, 17)).astype(np.uint16))
    write_image(d / "f32.tif", g.normal(0.0, 3.0, (12, 17)).astype(np.float32))
    write_image(d / "f64.npy", g.random((12, 17)))
    input_guard.protect(d)
    return d


# -- upscale: results -----------------------------------------------------------------------
def test_limits_and_percentiles_options_equal_the_api(capsys, images, tmp_path, ckpt, model):
    src = read_image(images / "u16.tif")
    for opt, value, kw in (("--limits", "500,3000", {"limits": (500.0, 3000.0)}),
                           ("--percentiles", "1,99", {"percentiles": (1.0, 99.0)}),
                           ("--limits=-10,2000", None, {"limits": (-10.0, 2000.0)})):
        dst = tmp_path / f"{opt.strip('-')[:5]}{len(kw)}{value or 'neg'}.tif".replace(",", "_")
        args = [opt] + ([value] if value else [])
        rc, out, err = run(capsys, "upscale", images / "u16.tif", "--scale", "2", "-o", dst, *args,
                           "--checkpoint", ckpt)
        assert (rc, err) == (0, "")
        assert np.array_equal(read_image(dst), upscale(src, scale=2, model=model, **kw))
    assert not np.array_equal(read_image(dst), upscale(src, scale=2, model=model))  # the option mattered


@pytest.mark.parametrize("name, dtype", [("rgb.png", np.uint8), ("u16.tif", np.uint16), ("f32.tif", np.float32),
                                         ("f64.npy", np.float64)])
def test_upscale_one_file_equals_the_api(capsys, images, tmp_path, ckpt, model, name, dtype):
    dst = tmp_path / f"out{os.path.splitext(name)[1]}"
    rc, out, err = run(capsys, "upscale", images / name, "--scale", "2", "-o", dst, "--checkpoint", ckpt)
    assert (rc, out, err) == (0, f"wrote {dst}\n", "")
    src, res = read_image(images / name), read_image(dst)
    assert res.dtype == dtype and res.shape[:2] == (24, 34)
    assert np.array_equal(res, upscale(src, scale=2, model=model))
    if dtype == np.uint16:  # the 12-bit range is kept, not stretched to 16 bits
        assert src.min() <= res.min() and res.max() <= src.max() < 4096


def test_size_means_exactly_that_output_grid(capsys, images, tmp_path, ckpt, model):
    rc, _, _ = run(capsys, "upscale", images / "u16.tif", "--size", "30,41", "-o", tmp_path / "s.tif",
                   "--checkpoint", ckpt)
    res = read_image(tmp_path / "s.tif")
    assert rc == 0 and res.shape == (30, 41)
    assert np.array_equal(res, upscale(read_image(images / "u16.tif"), size=(30, 41), model=model))
    rc, _, _ = run(capsys, "upscale", images / "rgb.png", "--size", "7x50", "-o", tmp_path / "t.png",
                   "--checkpoint", ckpt)
    res = read_image(tmp_path / "t.png")
    assert rc == 0 and res.shape == (7, 50, 3)
    assert np.array_equal(res, upscale(read_image(images / "rgb.png"), size=(7, 50), model=model))


def test_anisotropic_scale_and_cell_option(capsys, images, tmp_path, ckpt, model):
    src = read_image(images / "f64.npy")
    for cell in ("on", "off", "clamp"):
        rc, _, _ = run(capsys, "upscale", images / "f64.npy", "--scale", "2,1.5", "-o", tmp_path / f"{cell}.npy",
                       "--checkpoint", ckpt, "--cell", cell)
        res = np.load(tmp_path / f"{cell}.npy")
        assert rc == 0 and res.shape == (24, 26)
        assert np.array_equal(res, upscale(src, scale=(2, 1.5), model=model, cell=cell))
    assert np.abs(np.load(tmp_path / "on.npy") - np.load(tmp_path / "off.npy")).max() > 1e-6


def test_sixteen_bit_colour_and_gray_alpha_png(capsys, tmp_path, ckpt, model):
    g = np.random.default_rng(2)
    rgb16 = g.integers(0, 65536, (12, 17, 3)).astype(np.uint16)
    la = g.integers(0, 256, (12, 17, 2), dtype=np.uint8)
    write_image(tmp_path / "rgb16.png", rgb16)
    write_image(tmp_path / "la.png", la)
    rc, out, _ = run(capsys, "upscale", tmp_path / "rgb16.png", tmp_path / "la.png", "--scale", "2", "-o",
                     tmp_path / "o", "--checkpoint", ckpt)
    assert rc == 0 and out.startswith("2 upscaled, 0 skipped")
    res16, resla = read_image(tmp_path / "o" / "rgb16.png"), read_image(tmp_path / "o" / "la.png")
    assert res16.dtype == np.uint16 and np.array_equal(res16, upscale(rgb16, scale=2, model=model))
    # gray + alpha: two channels, each upscaled as gray
    assert resla.shape == (24, 34, 2) and np.array_equal(resla, upscale(la, scale=2, model=model, channel_axis=-1))


def test_several_inputs_and_folders_keep_their_names(capsys, images, tmp_path, ckpt, model):
    out_dir = tmp_path / "out"
    rc, out, err = run(capsys, "upscale", images / "rgb.png", images / "f64.npy", "--scale", "1.5", "-o", out_dir,
                       "--checkpoint", ckpt)
    assert rc == 0 and err == ""
    assert out.startswith("2 upscaled, 0 skipped (output exists), 0 failed in ")
    assert sorted(p.name for p in out_dir.iterdir()) == [".napari-liif-outputs", "f64.npy", "rgb.png"]
    expected = upscale(read_image(images / "rgb.png"), scale=1.5, model=model)
    assert np.array_equal(read_image(out_dir / "rgb.png"), expected)
    rc, out, _ = run(capsys, "upscale", images, "--scale", "1.5", "-o", out_dir, "--checkpoint", ckpt,
                     "--format", "tif")
    assert rc == 0 and out.startswith("4 upscaled, 0 skipped")
    assert sorted(p.name for p in out_dir.iterdir()) == [
        ".napari-liif-outputs", "f32.tif", "f64.npy", "f64.tif", "rgb.png", "rgb.tif", "u16.tif"]
    assert np.array_equal(read_image(out_dir / "rgb.tif"), read_image(out_dir / "rgb.png"))


def test_results_beside_the_inputs_and_resuming(capsys, images, ckpt):
    rc, out, _ = run(capsys, "upscale", images, "--scale", "2", "--checkpoint", ckpt)
    assert rc == 0 and out.startswith("4 upscaled, 0 skipped")
    made = images / "rgb_liif_x2.png"
    stamp = made.stat().st_mtime_ns
    rc, out, _ = run(capsys, "upscale", images, "--scale", "2", "--checkpoint", ckpt)
    assert rc == 0 and out.startswith("0 upscaled, 4 skipped (output exists), 0 failed")
    assert made.stat().st_mtime_ns == stamp
    rc, out, _ = run(capsys, "upscale", images / "rgb.png", "--scale", "2", "--checkpoint", ckpt)
    assert (rc, out) == (0, f"skipped: {made} exists (use --overwrite)\n")
    rc, out, _ = run(capsys, "upscale", images / "rgb.png", "--scale", "2", "--checkpoint", ckpt, "--overwrite")
    assert (rc, out) == (0, f"wrote {made}\n")


# -- upscale: failures ----------------------------------------------------------------------
def test_a_failed_file_gives_status_1_and_the_rest_is_done(capsys, images, tmp_path, ckpt):
    (images / "broken.png").write_bytes(b"\x89PNG but not really")
    rc, out, err = run(capsys, "upscale", images, "--scale", "2", "-o", tmp_path / "o", "--checkpoint", ckpt)
    assert rc == 1
    assert out.startswith("4 upscaled, 0 skipped (output exists), 1 failed")
    assert one_line(err) == f"napari-liif: error: {images / 'broken.png'}: not a PNG file"
    assert len(list((tmp_path / "o").iterdir())) == 4 + 1  # and the log of our outputs


@pytest.mark.parametrize("content, expected, rc", [
    (b"garbage", "not a PNG file", 1),  # found when the file is read: that file failed
    (None, "the image is empty (shape (0, 5))", 1),
])
def test_unreadable_or_empty_image(capsys, tmp_path, ckpt, content, expected, rc):
    src = tmp_path / ("bad.png" if content else "empty.npy")
    if content:
        src.write_bytes(content)
    else:
        np.save(src, np.zeros((0, 5), np.uint8))
    status, out, err = run(capsys, "upscale", src, "--scale", "2", "-o", tmp_path / "o.tif", "--checkpoint", ckpt)
    assert status == rc and out == ""
    assert one_line(err) == f"napari-liif: error: {src}: {expected}"
    assert not (tmp_path / "o.tif").exists()


def test_size_too_large_to_allocate(capsys, images, tmp_path, ckpt):
    rc, _, err = run(capsys, "upscale", images / "rgb.png", "--size", "2000000,3000000", "-o", tmp_path / "o.png",
                     "--checkpoint", ckpt)
    line = one_line(err)  # refused from the file's header, before any work: a bad argument
    assert rc == 2 and line.startswith(f"napari-liif: error: {images / 'rgb.png'}: the output of shape ")
    assert "shape (2000000, 3000000, 3) (uint8) needs" in line and "GiB of memory is available" in line
    rc, _, err = run(capsys, "upscale", images / "rgb.png", "--scale", "1e200", "-o", tmp_path / "o.png",
                     "--checkpoint", ckpt)
    line = one_line(err)  # one short line naming the scale, not hundreds of digits of a shape
    assert rc == 2 and len(line) < 300 and line.endswith(
        "rgb.png: scale 1e+200 would make an axis of 12 pixels 1.2e+201 pixels long, too large to allocate "
        "(at most 1,099,511,627,776); give a smaller scale")


@pytest.mark.parametrize("args, expected", [
    (["--scale", "0"], "argument --scale: scale must be a positive finite number, got '0'"),
    (["--scale", "-2"], "got '-2'"),
    (["--scale", "nan"], "got 'nan'"),
    (["--scale", "inf"], "got 'inf'"),
    (["--scale", "2,0"], "got '0'"),
    (["--scale", "two"], "scale must be a number, got 'two'"),
    (["--size", "0,5"], "size must be positive integers H,W or Z,H,W, got '0,5'"),
    (["--size", "5"], "size must be H,W or Z,H,W (integers), got '5'"),
    (["--size", "4.5,3"], "got '4.5,3'"),
    (["--scale", "2", "--size", "4,4"], "not allowed with argument"),
    ([], "one of the arguments --scale --size --isotropic is required"),
    (["--scale", "2", "--cell", "sometimes"], "invalid choice: 'sometimes'"),
    (["--scale", "2", "--limits", "9,1"], "limits must be LOW,HIGH with LOW <= HIGH, got '9,1'"),
    (["--scale", "2", "--limits", "x"], "limits must be LOW,HIGH (two numbers), got 'x'"),
    (["--scale", "2", "--percentiles", "1,101"], "percentiles must lie between 0 and 100, got '1,101'"),
    (["--scale", "2", "--limits", "0,1", "--percentiles", "1,99"], "not allowed with argument"),
])
def test_bad_arguments_give_status_2_and_one_line(capsys, images, ckpt, args, expected):
    rc, out, err = run(capsys, "upscale", images / "rgb.png", *args, "--checkpoint", ckpt)
    assert rc == 2 and out == ""
    line = one_line(err)
    assert line.startswith("napari-liif upscale: error: ") and expected in line


def test_missing_inputs_and_bad_checkpoints_are_bad_arguments(capsys, images, tmp_path, ckpt):
    rc, _, err = run(capsys, "upscale", images / "rgb.png", tmp_path / "nope.png", "--scale", "2", "-o",
                     tmp_path / "o", "--checkpoint", ckpt)
    assert rc == 2 and one_line(err) == f"napari-liif: error: {tmp_path / 'nope.png'}: no such file or folder"
    assert not (tmp_path / "o").exists()  # nothing was done
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    rc, _, err = run(capsys, "upscale", images / "rgb.png", "--scale", "2", "-o", tmp_path / "o.png",
                     "--checkpoint", bad)
    line = one_line(err)
    assert rc == 2 and line.startswith(f"napari-liif: error: {bad}: ") and "checkpoint" in line
    rc, _, err = run(capsys, "upscale", images / "rgb.png", "--scale", "2",
                     "--checkpoint", tmp_path / "none.safetensors")
    assert rc == 2 and "none.safetensors: no such file" in one_line(err)
    if not torch.cuda.is_available():
        rc, _, err = run(capsys, "upscale", images / "rgb.png", "--scale", "2", "--checkpoint", ckpt,
                         "--device", "cuda")
        assert rc == 2 and "device 'cuda' is not available here; available: auto, " in one_line(err)


def test_an_input_is_never_overwritten(capsys, images, ckpt):
    src = images / "rgb.png"
    before = src.read_bytes()
    for extra in ([], ["--overwrite"]):
        rc, _, err = run(capsys, "upscale", src, "--scale", "2", "-o", src, "--checkpoint", ckpt, *extra)
        assert rc == 2 and one_line(err) == (f"napari-liif: error: {src}: output would overwrite an input; "
                                             "choose another -o folder or --suffix")
    rc, _, err = run(capsys, "upscale", images, "--scale", "2", "-o", images, "--checkpoint", ckpt, "--overwrite")
    assert rc == 2 and "output would overwrite an input" in one_line(err)
    rc, _, err = run(capsys, "upscale", src, "--scale", "2", "--suffix", "", "--checkpoint", ckpt, "--overwrite")
    assert rc == 2 and "output would overwrite an input" in one_line(err)
    assert src.read_bytes() == before
    assert sorted(p.name for p in images.iterdir()) == ["f32.tif", "f64.npy", "rgb.png", "u16.tif"]


# -- info -------------------------------------------------------------------------------------
def test_info_prints_architecture_switches_and_parameter_count(capsys, ckpt):
    rc, out, err = run(capsys, "info", ckpt)
    assert rc == 0 and err == ""
    fields = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert fields["encoder"] == "edsr-baseline"
    assert fields["decoder_hidden"] == "[32, 32]"
    assert (fields["local_ensemble"], fields["feat_unfold"], fields["cell_decode"]) == ("True", "True", "True")
    assert fields["bilinear_residual"] == "False"
    # encoder: head 3->8 (224) + 2 blocks x 2 convs 8->8 (4 x 584) + body conv (584) = 3144
    # decoder: 8*9 + 2 + 2 = 76 inputs: 76*32+32 + 32*32+32 + 32*3+3 = 3619
    assert int(fields["parameters"]) == 3144 + 3619
    assert fields["name"] == "tiny.safetensors"


def test_info_on_a_bad_file(capsys, tmp_path):
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"\x00" * 20)
    rc, out, err = run(capsys, "info", bad)
    assert rc == 2 and out == "" and one_line(err).startswith(f"napari-liif: error: {bad}: ")


def test_missing_default_model_message(capsys, monkeypatch, tmp_path):
    """The same error whether or not weights are bundled right now: point the default elsewhere."""
    from napari_liif import engine
    from napari_liif.checkpoint import CheckpointError

    monkeypatch.setattr(engine, "DEFAULT_WEIGHTS", tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match=r"absent\.safetensors: no bundled default model"):
        load_model()
    rc, _, err = run(capsys, "info")
    assert rc == 2 and one_line(err).startswith(f"napari-liif: error: {tmp_path / 'absent.safetensors'}: no bundled")


# -- the installed console script ---------------------------------------------------------------
def test_console_script(images, tmp_path, ckpt, model):
    # the script installed beside this interpreter (CI runs .venv/bin/python without activating
    # the environment, so PATH need not hold it); installing the package installs it
    exe = Path(sys.executable).with_name("napari-liif.exe" if os.name == "nt" else "napari-liif")
    assert exe.is_file(), f"{exe}: the console script is not installed beside {sys.executable}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    dst = tmp_path / "out.png"
    done = subprocess.run([exe, "upscale", str(images / "rgb.png"), "--scale", "2", "-o", str(dst),
                           "--checkpoint", str(ckpt)], capture_output=True, text=True, env=env, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"wrote {dst}\n", "")
    assert np.array_equal(read_image(dst), upscale(read_image(images / "rgb.png"), scale=2, model=model))
    failed = subprocess.run([exe, "upscale", str(tmp_path / "missing.png"), "--scale", "2", "--checkpoint", str(ckpt)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr == f"napari-liif: error: {tmp_path / 'missing.png'}: no such file or folder\n"
