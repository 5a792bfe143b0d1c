"""Hostile inputs and destinations (issue 9): nothing the user owns is ever deleted or changed,
problems are found before the work, extreme values give correct results or one line that says
why, and every message is one line of ours.

Every file a test is handed comes from ``user_file`` or is passed to ``input_guard.protect``
(tests/conftest.py): a test that changed, replaced or deleted one fails at teardown. Models are
tiny and random (``batch_helpers``) or render exact bilinear interpolation (``bilinear_model``),
so that output values can be checked with numbers.
"""

from __future__ import annotations

import copy
import json
import os
import random
import struct

import numpy as np
import pytest
import torch
from batch_helpers import tiny_checkpoint, tiny_model
import cli_helpers
from cli_helpers import run
from helpers_models import bilinear_numpy, nearest

from napari_liif.api import upscale
from napari_liif.batch import BatchError, plan, run_batch
from napari_liif.checkpoint import CheckpointError, save_safetensors
from napari_liif.engine import load_model
from napari_liif.intensity import IntensityMap, masked
from napari_liif.io import ImageIOError, read_image, write_image
from napari_liif.outputs import (LOG_NAME, Inputs, OutputError, check_store, claim_run_folder, store_state)
from napari_liif.validate import check_region, check_shape, check_unit_image
from napari_liif.zarr_io import is_complete, read_ome_metadata, read_zarr, write_zarr

import dask.array as da
import zarr
import tifffile

F32_LOW = float(np.finfo(np.float32).min)  # -3.4028235e38, the GIS float32 nodata

pytestmark = pytest.mark.usefixtures("single_thread_module")


@pytest.fixture
def gen():
    return np.random.default_rng(11)


class Work:
    """Counts the work done inside a ``with`` block: forward calls of torch modules, parameter
    elements allocated (models built) and the peak of bytes traced by tracemalloc (NumPy arrays
    and Python objects; torch tensors are counted by the first two). ``none`` is true when the
    block ran no module, built no parameter and allocated under ``small`` bytes."""

    small = 8 << 20  # above Python's own bookkeeping; the outputs these refusals guard are terabytes

    def __enter__(self):
        import tracemalloc

        self.forwards = self.params = 0
        mm = torch.nn.modules.module
        self._hooks = [mm.register_module_forward_hook(self._forward),
                       mm.register_module_parameter_registration_hook(self._param)]
        self._own_trace = not tracemalloc.is_tracing()
        if self._own_trace:
            tracemalloc.start()
        tracemalloc.reset_peak()
        self._base = tracemalloc.get_traced_memory()[0]
        return self

    def _forward(self, *_):
        self.forwards += 1

    def _param(self, _module, _name, param):
        self.params += 0 if param is None else param.numel()

    def __exit__(self, *exc):
        import tracemalloc

        self.peak_bytes = tracemalloc.get_traced_memory()[1] - self._base
        if self._own_trace:
            tracemalloc.stop()
        for h in self._hooks:
            h.remove()

    @property
    def none(self) -> bool:
        return self.forwards == 0 and self.params == 0 and self.peak_bytes < self.small

    def __repr__(self):
        return f"Work(forwards={self.forwards}, params={self.params}, peak_bytes={self.peak_bytes})"


def counted(capsys, *argv):
    """``run``, and the ``Work`` it did."""
    with Work() as work:
        rc, out, err = run(capsys, *argv)
    return rc, out, err, work


def test_the_work_counter_sees_arrays_modules_and_parameters():
    with Work() as idle:
        pass
    with Work() as alloc:
        np.ones(16 << 20, np.uint8)
    with Work() as build:
        lin = torch.nn.Linear(10, 20)
    with Work() as call:
        lin(torch.zeros(1, 10))
    assert idle.none and (alloc.peak_bytes >= 16 << 20) and not alloc.none
    assert (build.params, build.forwards, call.params, call.forwards) == (220, 0, 0, 1)


def one_line(err: str) -> str:
    """``cli_helpers.one_line``, and no library warning either."""
    assert "Warning" not in err, f"a warning on stderr: {err!r}"
    return cli_helpers.one_line(err)


def u16(gen, shape=(10, 12)):
    return gen.integers(100, 4000, shape).astype(np.uint16)


def zarr_group(path):
    """A bare zarr v2 group of someone else's: metadata only."""
    path.mkdir(parents=True, exist_ok=True)
    (path / ".zgroup").write_text('{"zarr_format": 2}')
    return path


def listing(folder):
    return sorted(os.listdir(folder))


# == 1. nothing the user owns is deleted or overwritten ===========================================
# -- the two headline bugs -------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_dask_output_that_holds_its_input_is_refused(capsys, tmp_path, ckpt, user_file, gen, extra):
    raw = user_file("proj.zarr/raw.tif", u16(gen))
    proj = raw.parent
    zarr_group(proj)
    rc, out, err = run(capsys, "upscale", raw, "--scale", "2", "--dask", "-o", proj, "--checkpoint", ckpt,
                       "--quiet", *extra)
    assert (rc, out) == (2, "")
    assert one_line(err) == (f"napari-liif: error: {proj}: output would overwrite an input (it holds the input "
                             f"{raw}); choose another -o folder or --suffix")
    assert listing(proj) == [".zgroup", "raw.tif"]


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_dask_output_folder_of_someone_elses_files_is_refused(capsys, tmp_path, ckpt, user_file, gen, extra):
    img = user_file("img.tif", u16(gen))
    notes = user_file("shared.zarr/notes.txt", "someone else's notes")
    rc, out, err = run(capsys, "upscale", img, "--scale", "2", "--dask", "-o", notes.parent, "--checkpoint", ckpt,
                       "--quiet", *extra)
    assert (rc, out) == (2, "")
    assert one_line(err) == (f"napari-liif: error: {notes.parent}: is a folder, not a zarr store; napari-liif never "
                             "replaces such a folder, even with --overwrite: choose another -o")
    assert listing(notes.parent) == ["notes.txt"]


def test_a_zarr_store_with_a_foreign_file_inside_is_never_replaced(capsys, tmp_path, ckpt, user_file, gen):
    img = user_file("img.tif", u16(gen))
    notes = user_file("store.zarr/notes.txt", "mine")
    zarr_group(notes.parent)
    rc, _, err = run(capsys, "upscale", img, "--scale", "2", "--dask", "-o", notes.parent, "--checkpoint", ckpt,
                     "--overwrite", "--quiet")
    assert rc == 2 and one_line(err).endswith(f"{notes.parent}: holds notes.txt, which is not part of a zarr store; "
                                              "napari-liif never replaces such a folder, even with --overwrite: "
                                              "choose another -o")


def test_dask_into_an_existing_plain_folder_adds_a_store_beside_the_files(capsys, tmp_path, ckpt, model, user_file,
                                                                         gen):
    a = u16(gen)
    img = user_file("img.tif", a)
    thesis = user_file("folder/thesis.docx", b"PK\x03\x04 precious")
    rc, out, err = run(capsys, "upscale", img, "--scale", "2", "--dask", "-o", thesis.parent, "--checkpoint", ckpt,
                       "--quiet")
    assert (rc, out, err) == (0, f"wrote {thesis.parent / 'img.zarr'}\n", "")
    assert listing(thesis.parent) == ["img.zarr", "thesis.docx"]
    assert np.array_equal(read_zarr(thesis.parent / "img.zarr").compute(), upscale(a, scale=2, model=model))


def test_dask_output_that_is_not_a_folder_or_store_is_refused(capsys, tmp_path, ckpt, user_file, gen):
    img = user_file("img.tif", u16(gen))
    rc, out, err = run(capsys, "upscale", img, "--scale", "2", "--dask", "-o", tmp_path / "out.png",
                       "--checkpoint", ckpt)
    assert rc == 2 and one_line(err) == (f"napari-liif: error: {tmp_path / 'out.png'}: --dask writes zarr stores; "
                                         "-o must be a folder or a name ending in .zarr")
    assert not (tmp_path / "out.png").exists()


def test_a_zarr_store_of_someone_else_is_replaced_only_with_overwrite(capsys, tmp_path, ckpt, model, gen):
    a = u16(gen)
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, a)
    theirs = tmp_path / "theirs.zarr"
    zarr.open_array(str(theirs), mode="w", shape=(3, 3), dtype="f4", zarr_format=2)[:] = 7.0
    assert store_state(theirs) == "foreign-store"
    rc, _, err = run(capsys, "upscale", img, "--scale", "2", "--dask", "-o", theirs, "--checkpoint", ckpt, "--quiet")
    assert rc == 2 and one_line(err).endswith(f"{theirs}: exists and is a zarr store not written by napari-liif; "
                                              "pass --overwrite to replace it, or choose another -o")
    assert np.array_equal(zarr.open_array(str(theirs), mode="r")[:], np.full((3, 3), 7.0, np.float32))
    rc, out, _ = run(capsys, "upscale", img, "--scale", "2", "--dask", "-o", theirs, "--checkpoint", ckpt, "--quiet",
                     "--overwrite")
    assert (rc, out) == (0, f"wrote {theirs}\n") and is_complete(theirs)
    assert np.array_equal(read_zarr(theirs).compute(), upscale(a, scale=2, model=model))


def test_our_complete_store_is_skipped_then_replaced_with_overwrite(capsys, tmp_path, ckpt, user_file, gen):
    img = user_file("img.tif", u16(gen))
    dst = tmp_path / "up.zarr"
    args = ["upscale", img, "--scale", "2", "--dask", "-o", dst, "--checkpoint", ckpt, "--quiet"]
    assert run(capsys, *args)[:2] == (0, f"wrote {dst}\n")
    stamp = (dst / ".zattrs").stat().st_mtime_ns
    assert run(capsys, *args)[:2] == (0, f"skipped: {dst} is complete (use --overwrite)\n")
    assert (dst / ".zattrs").stat().st_mtime_ns == stamp
    assert run(capsys, *args, "--overwrite")[:2] == (0, f"wrote {dst}\n")
    assert listing(tmp_path).count("up.zarr") == 1 and not [n for n in listing(tmp_path) if n.startswith(".up")]


# -- atomic zarr writes --------------------------------------------------------------------------
@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_an_interrupted_zarr_write_leaves_nothing_under_a_final_name(tmp_path, error):
    import dask

    def boom(block, block_info=None):
        if block_info[0]["chunk-location"] == (1, 1):
            raise error
        return block

    lazy = da.zeros((8, 8), chunks=4, dtype="u2").map_blocks(boom, dtype="u2")
    with dask.config.set(scheduler="synchronous"), pytest.raises(type(error)):
        write_zarr(lazy, tmp_path / "out.zarr")
    assert listing(tmp_path) == []  # neither the store nor its hidden temporary


def test_an_earlier_store_survives_a_failed_rewrite(tmp_path):
    import dask

    dst = write_zarr(np.ones((4, 4), np.uint8), tmp_path / "out.zarr")
    bad = da.zeros((4, 4), chunks=2, dtype="u1").map_blocks(lambda b: 1 / 0, dtype="u1")
    with dask.config.set(scheduler="synchronous"), pytest.raises(ZeroDivisionError):
        write_zarr(bad, dst, overwrite=True)
    assert np.array_equal(read_zarr(dst).compute(), np.ones((4, 4), np.uint8)) and listing(tmp_path) == ["out.zarr"]


def test_stale_partial_stores_of_ours_are_cleaned_and_others_kept(capsys, tmp_path, ckpt, user_file, gen):
    img = user_file("img.tif", u16(gen))
    dst = tmp_path / "up.zarr"
    stale = tmp_path / ".up.zarr.partial-0123abcd.zarr"
    z = zarr.open_array(str(stale), mode="w", shape=(2, 2), dtype="u1", zarr_format=2)
    z.attrs["napari_liif"] = {"complete": False}  # a killed run of ours
    lookalike = user_file(".up.zarr.partial-89abcdef.zarr/notes.txt", "not ours")
    rc, _, _ = run(capsys, "upscale", img, "--scale", "2", "--dask", "-o", dst, "--checkpoint", ckpt, "--quiet")
    assert rc == 0 and not stale.exists() and lookalike.read_text() == "not ours"


def test_write_zarr_library_refuses_a_folder_even_with_overwrite(tmp_path, user_file):
    notes = user_file("data/notes.txt", "mine")
    with pytest.raises(OutputError, match="is a folder, not a zarr store; napari-liif never replaces such a folder"):
        write_zarr(np.zeros((2, 2)), notes.parent, overwrite=True)
    with pytest.raises(OutputError, match="output would overwrite an input"):
        write_zarr(np.zeros((2, 2)), tmp_path / "user", overwrite=True, inputs=Inputs([notes]))


# -- files ---------------------------------------------------------------------------------------
def test_an_existing_file_not_ours_is_refused_unless_overwrite(capsys, tmp_path, ckpt, model, user_file, gen):
    a = gen.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    src = user_file("a.png", a)
    dst = tmp_path / "out.png"
    write_image(dst, np.zeros((2, 2), np.uint8))
    keep = tmp_path / "keep.png"
    os.link(dst, keep)  # a hard link: replacing dst must not write into this file
    before = keep.read_bytes()
    rc, out, err, work = counted(capsys, "upscale", src, "--scale", "2", "-o", dst, "--checkpoint", ckpt)
    assert rc == 2 and work.none, work
    assert one_line(err) == (f"napari-liif: error: {dst}: exists and was not written by napari-liif (or was changed "
                             "since); pass --overwrite to replace it, or choose another -o")
    rc, out, err, work = counted(capsys, "upscale", src, "--scale", "2", "-o", dst, "--checkpoint", ckpt, "--overwrite")
    assert (rc, out, err) == (0, f"wrote {dst}\n", "")
    assert work.forwards > 0  # the counter sees real work (so its zeros mean something)
    assert np.array_equal(read_image(dst), upscale(a, scale=2, model=model)) and keep.read_bytes() == before


def test_a_hard_link_to_the_input_is_refused_even_with_overwrite(capsys, tmp_path, ckpt, user_file, gen):
    src = user_file("a.png", gen.integers(0, 256, (6, 7), dtype=np.uint8))
    link = tmp_path / "link.png"
    os.link(src, link)
    rc, _, err = run(capsys, "upscale", src, "--scale", "2", "-o", link, "--checkpoint", ckpt, "--overwrite")
    assert rc == 2 and one_line(err) == (f"napari-liif: error: {link}: output would overwrite an input (it is another "
                                         f"name (a hard link) for the input {src}); choose another -o folder or "
                                         "--suffix")


def test_a_symlink_to_the_input_is_refused(capsys, tmp_path, ckpt, user_file, gen):
    src = user_file("a.png", gen.integers(0, 256, (6, 7), dtype=np.uint8))
    link = tmp_path / "link.png"
    link.symlink_to(src)
    rc, _, err = run(capsys, "upscale", src, "--scale", "2", "-o", link, "--checkpoint", ckpt, "--overwrite")
    assert rc == 2 and f"{link}: output would overwrite an input (it is the input {src})" in one_line(err)


def test_dot_dot_paths_resolve_to_the_input(capsys, tmp_path, ckpt, user_file, gen):
    src = user_file("a.png", gen.integers(0, 256, (6, 7), dtype=np.uint8))
    sneaky = src.parent / ".." / "user" / "a.png"
    rc, _, err = run(capsys, "upscale", src, "--scale", "2", "-o", sneaky, "--checkpoint", ckpt, "--overwrite")
    assert rc == 2 and f"{sneaky}: output would overwrite an input (it is the input {src})" in one_line(err)


def test_an_output_folder_that_is_a_link_to_the_input_folder_is_refused(capsys, tmp_path, ckpt, user_file, gen):
    src = user_file("a.png", gen.integers(0, 256, (6, 7), dtype=np.uint8))
    user_file("b.png", gen.integers(0, 256, (6, 7), dtype=np.uint8))
    (tmp_path / "out").symlink_to(src.parent, target_is_directory=True)
    rc, _, err = run(capsys, "upscale", src.parent, "--scale", "2", "-o", tmp_path / "out", "--checkpoint", ckpt,
                     "--overwrite")
    assert rc == 2 and f"{tmp_path / 'out' / 'a.png'}: output would overwrite an input" in one_line(err)


def test_an_output_name_that_is_a_folder_is_refused(capsys, tmp_path, ckpt, user_file, gen):
    src = user_file("a.png", gen.integers(0, 256, (6, 7), dtype=np.uint8))
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    rc, _, err = run(capsys, "upscale", src, "--scale", "2", "-o", tmp_path / "out", "--checkpoint", ckpt,
                     "--overwrite")
    assert rc == 2 and one_line(err) == (f"napari-liif: error: {tmp_path / 'out' / 'a.png'}: is a folder; the output "
                                         "here is a file: choose another -o")


def test_an_output_of_ours_the_user_edited_is_refused(capsys, tmp_path, ckpt, user_file, gen):
    src = user_file("a.tif", u16(gen))
    out = tmp_path / "out"
    assert run(capsys, "upscale", src, "--scale", "2", "-o", out, "--checkpoint", ckpt)[0] == 0
    assert run(capsys, "upscale", src, "--scale", "2", "-o", out, "--checkpoint", ckpt)[1].startswith("skipped")
    tifffile.imwrite(out / "a.tif", np.zeros((3, 3), np.uint16))  # the user's edit
    rc, _, err = run(capsys, "upscale", src, "--scale", "2", "-o", out, "--checkpoint", ckpt)
    assert rc == 2 and "exists and was not written by napari-liif (or was changed since)" in one_line(err)
    assert np.array_equal(tifffile.imread(out / "a.tif"), np.zeros((3, 3), np.uint16))


def test_an_interrupted_batch_leaves_no_partial_file(tmp_path, user_file, gen):
    for name in ("a", "b", "c"):
        user_file(f"{name}.tif", u16(gen))
    calls = []

    def one(a):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return a

    jobs = plan([str(tmp_path / "user")], str(tmp_path / "out"), scale=2)
    with pytest.raises(KeyboardInterrupt):
        run_batch(jobs, one)
    assert listing(tmp_path / "out") == [LOG_NAME, "a.tif"]


def test_a_write_that_fails_halfway_leaves_nothing(tmp_path, user_file, gen, monkeypatch):
    from napari_liif import io

    user_file("a.png", gen.integers(0, 256, (6, 7), dtype=np.uint8))

    def full_disk(path, suffix, data, *calibration):
        path.write_bytes(b"\x89PNG\r\n\x1a\n half of it")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "_encode", full_disk)
    report = run_batch(plan([str(tmp_path / "user")], str(tmp_path / "out"), scale=2), lambda a: a)
    out = tmp_path / "out" / "a.png"
    assert [(p.name, why) for p, why in report.failed] == [
        ("a.png", f"no space left on device writing {out}: free space or choose another -o")]
    assert listing(tmp_path / "out") == []


def test_devices_and_pipes_are_neither_read_nor_replaced(capsys, tmp_path, ckpt, user_file, gen):
    src = user_file("a.png", gen.integers(0, 256, (6, 7), dtype=np.uint8))
    rc, _, err = run(capsys, "upscale", "/dev/zero", "--scale", "2", "-o", tmp_path / "o.npy", "--checkpoint", ckpt)
    assert rc == 2 and one_line(err) == ("napari-liif: error: /dev/zero: not a regular file (a device, pipe or "
                                         "socket); give an image file")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    rc, _, err = run(capsys, "upscale", src, "--scale", "2", "-o", fifo, "--checkpoint", ckpt, "--overwrite")
    assert rc == 2 and one_line(err).endswith(f"{fifo}: is not a regular file (a device, pipe or socket); "
                                              "napari-liif never replaces it, even with --overwrite: choose another -o")
    assert fifo.is_fifo()


def test_an_output_format_that_cannot_hold_the_result_fails_before_computing(tmp_path, user_file, gen):
    user_file("f.npy", gen.random((6, 7)).astype(np.float32))
    user_file("g.npy", gen.integers(0, 255, (6, 7)).astype(np.uint8))
    calls = []
    jobs = plan([str(tmp_path / "user")], str(tmp_path / "out"), scale=2, fmt="png")
    report = run_batch(jobs, lambda a: calls.append(a.dtype) or np.repeat(np.repeat(a, 2, 0), 2, 1))
    assert calls == [np.uint8]  # the float file was never read nor upscaled
    assert [(p.name, why) for p, why in report.failed] == [
        ("f.npy", "PNG stores bool/uint8/uint16, not float32; write .tif or .npy to keep this dtype")]


def test_a_cmyk_jpeg_is_read_as_rgb_not_as_rgba(tmp_path):
    from PIL import Image

    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    a = read_image(tmp_path / "cmyk.jpg")
    assert a.shape == (8, 10, 3) and abs(int(a[..., 0].mean()) - 200) <= 3 and a[..., 1:].max() <= 6


def test_write_image_never_replaces_without_overwrite(tmp_path, user_file):
    mine = user_file("mine.png", np.full((3, 3), 9, np.uint8))
    with pytest.raises(ImageIOError, match=r"mine\.png: exists; pass overwrite=True to replace it"):
        write_image(mine, np.zeros((3, 3), np.uint8))
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageIOError, match=r"dir\.png: is a folder; give a file name"):
        write_image(tmp_path / "dir.png", np.zeros((3, 3), np.uint8), overwrite=True)


def test_an_unwritable_output_folder_is_refused_before_the_work(capsys, tmp_path, ckpt, user_file, gen):
    src = user_file("a.png", gen.integers(0, 256, (6, 7), dtype=np.uint8))
    rc, _, err, work = counted(capsys, "upscale", src, "--scale", "2", "-o", "/proc/napari-liif-test/out/",
                               "--checkpoint", ckpt)
    assert rc == 2 and work.none, work
    assert one_line(err).startswith("napari-liif: error: /proc/napari-liif-test/out: cannot write in /proc (")
    rc, _, err = run(capsys, "upscale", src, "--scale", "2", "-o", src.parent / "a.png" / "sub" / "x.png",
                     "--checkpoint", ckpt)
    assert rc == 2 and one_line(err) == (f"napari-liif: error: {src.parent / 'a.png' / 'sub'}: cannot create this "
                                         f"folder: {src} is a file, not a folder")


def test_the_batch_widget_plan_refuses_what_the_command_refuses(tmp_path, user_file, gen):
    # the widget's folder mode calls plan() exactly so (no overwrite)
    user_file("in/a.png", gen.integers(0, 256, (6, 7), dtype=np.uint8))
    user_file("out/a.png", b"someone else's file")
    with pytest.raises(BatchError, match=r"out/a\.png: exists and was not written by napari-liif"):
        plan([str(tmp_path / "user" / "in")], str(tmp_path / "user" / "out"), scale=2)


# -- sample, the TIFF writer, training and data folders --------------------------------------------
def test_sample_refuses_folders_and_bad_formats(capsys, tmp_path):
    (tmp_path / "d").mkdir()
    rc, _, err = run(capsys, "sample", "photo", tmp_path / "d")
    assert rc == 2 and one_line(err).startswith(f"napari-liif: error: {tmp_path / 'd'}: is a folder; give a file name")
    rc, _, err = run(capsys, "sample", "cells", tmp_path / "cells.png")
    assert rc == 2 and "PNG stores (H, W) or (H, W, 2|3|4) images, not shape (2, 256, 256)" in one_line(err)
    assert listing(tmp_path) == ["d"]


def test_the_tiff_writer_never_replaces_the_name_it_adds(tmp_path, user_file):
    from napari_liif.samples import write_tiff

    mine = user_file("layer.tif", np.full((3, 3), 5, np.uint16))
    with pytest.raises(ValueError, match=r"layer\.tif: exists; the napari LIIF writer adds \.tif"):
        write_tiff(str(mine.with_suffix("")), np.zeros((4, 4), np.float32), {})
    assert write_tiff(str(tmp_path / "new"), np.ones((4, 4), np.float32), {}) == [str(tmp_path / "new.tif")]
    assert listing(tmp_path) == ["new.tif", "user"]


def test_run_folders(tmp_path, user_file):
    theirs = user_file("theirs/notes.txt", "x").parent
    with pytest.raises(OutputError, match="is not empty and is not a napari-liif run folder"):
        claim_run_folder(theirs, resume=True)
    run_dir = claim_run_folder(tmp_path / "run")
    (run_dir / "last.pth").write_bytes(b"checkpoint")
    with pytest.raises(OutputError, match="already holds a napari-liif run; pass --resume"):
        claim_run_folder(run_dir)
    assert claim_run_folder(run_dir, resume=True) == run_dir
    with pytest.raises(OutputError, match="is a file; the run folder must be a folder"):
        claim_run_folder(user_file("afile", "x"))


def test_train_data_and_evaluate_refuse_foreign_outputs_before_the_work(capsys, tmp_path, user_file, ckpt):
    notes = user_file("runs/notes.txt", "mine")
    rc, _, err, work = counted(capsys, "train", tmp_path / "user", "-o", notes.parent, "--steps", "1")
    assert rc == 2 and work.none, work
    assert "is not empty and is not a napari-liif run folder" in one_line(err)
    other = user_file("model.safetensors", b"not a model")
    rc, _, err = run(capsys, "train", tmp_path / "user", "-o", tmp_path / "run", "--steps", "1", "--export", other)
    assert rc == 2 and "exists and is not a napari-liif model file; --export never replaces" in one_line(err)
    photos = user_file("photos/train/holiday.jpg", b"\xff\xd8\xff mine")
    rc, _, err = run(capsys, "data", photos.parent.parent)
    assert rc == 2 and one_line(err).endswith(f"{photos.parent}: is not empty and was not made by napari-liif data "
                                              "(which replaces it); choose another folder")
    table = user_file("table.csv", "a,b\n1,2\n")
    rc, _, err = run(capsys, "evaluate", tmp_path / "user", "--checkpoint", ckpt, "--csv", table)
    assert rc == 2 and "exists and was not written by napari-liif" in one_line(err)


# == 2. problems found before the work ===========================================================
def test_an_output_too_large_for_memory_is_refused_before_the_work(capsys, tmp_path, ckpt, user_file, gen):
    src = user_file("a.png", gen.integers(0, 256, (6, 7, 3), dtype=np.uint8))
    for flag, value in (("--size", "2000000,3000000"), ("--scale", "1e200")):
        rc, out, err, work = counted(capsys, "upscale", src, flag, value, "-o", tmp_path / "o.png",
                                     "--checkpoint", ckpt)
        assert rc == 2 and out == "" and work.none, work
        line = one_line(err)
        assert line.startswith(f"napari-liif: error: {src}: ") and ("of memory is available" in line
                                                                    or "too large to allocate" in line)
    assert listing(tmp_path) == ["user"]


@pytest.mark.parametrize("key, value", [("n_feats", 10**9), ("n_resblocks", 10**6), ("n_resblocks", -4)])
def test_an_absurd_checkpoint_spec_is_refused_before_allocating(capsys, tmp_path, user_file, key, value):
    m = tiny_model(seed=3)
    spec = copy.deepcopy(m.spec)
    spec["args"]["encoder_spec"]["args"][key] = value
    path = save_safetensors(tmp_path / "absurd.safetensors", m.net, spec)
    src = user_file("a.png", np.zeros((6, 7), np.uint8) + 9)
    rc, _, err, work = counted(capsys, "upscale", src, "--scale", "2", "-o", tmp_path / "o.png", "--checkpoint", path)
    assert rc == 2 and work.none, work
    assert one_line(err) == (f"napari-liif: error: {path}: the spec asks for args.encoder_spec.args.{key}={value}, "
                             "an absurd layer size for these weights (largest tensor dimension 148, 22 tensors; "
                             "at most 296); refused before allocating anything")


def test_refusals_before_the_work_do_not_even_import_torch(tmp_path, user_file, gen):
    """Unsafe outputs, outputs too large for memory and absurd safetensors specs are refused from
    names and headers alone: a fresh process refuses all three without importing torch."""
    import subprocess
    import sys

    m = tiny_model(seed=3)
    spec = copy.deepcopy(m.spec)
    spec["args"]["imnet_spec"]["args"]["hidden_list"] = [10**8, 32]
    absurd = save_safetensors(tmp_path / "absurd.safetensors", m.net, spec)
    src = user_file("a.tif", u16(gen))
    calls = [["upscale", src, "--scale", "2", "-o", src],
             ["upscale", src, "--size", "3000000,3000000", "-o", tmp_path / "big.tif"],
             ["upscale", src, "--scale", "2", "-o", tmp_path / "o.tif", "--checkpoint", absurd]]
    code = ("import sys; from napari_liif.cli import main\n"
            f"codes = [main([str(a) for a in c]) for c in {[[str(a) for a in c] for c in calls]!r}]\n"
            "print(codes, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout == "[2, 2, 2] False\n"
    lines = done.stderr.splitlines()
    assert len(lines) == 3 and "output would overwrite an input" in lines[0] and "of memory is available" in lines[1]
    assert lines[2] == (f"napari-liif: error: {absurd}: the spec asks for args.imnet_spec.args.hidden_list[0]="
                        "100000000, an absurd layer size for these weights (largest tensor dimension 148, 22 "
                        "tensors; at most 296); refused before allocating anything")


def _mutations(spec: dict, rng: random.Random, n: int):
    pool = [-1, 0, 1, 10**9, 2**70, 1.5, float("nan"), "x", None, [], {}, True, [10**6] * 3,
            {"name": "edsr"}, [[[[[1]]]]], "edsr-baseline"]

    def leaves(node, path=()):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, path + (k,))
        yield path

    paths = [p for p in leaves(spec["args"]) if p]
    for _ in range(n):
        s = copy.deepcopy(spec)
        node, path = s["args"], rng.choice(paths)
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = copy.deepcopy(rng.choice(pool))
        yield s


def test_random_checkpoint_specs_give_one_line_or_a_model(tmp_path):
    m = tiny_model(seed=3)
    path = tmp_path / "fuzz.safetensors"
    outcomes = {"refused": 0, "loaded": 0}
    n_weights = sum(p.numel() for p in m.net.parameters())
    for spec in _mutations(m.spec, random.Random(9), 40):
        save_safetensors(path, m.net, spec)
        with Work() as work:
            try:
                load_model(path, device="cpu")
                outcomes["loaded"] += 1
            except CheckpointError as exc:
                msg = str(exc)
                assert msg.startswith(f"{path}: ") and "\n" not in msg and "Traceback" not in msg
                outcomes["refused"] += 1
        # sizes of 10**9 or 2**70 are refused before allocating; a module renamed to an encoder may
        # build that encoder at its default size (1.2 M weights) before the weights fail to match
        assert work.params <= 100 * n_weights and work.forwards == 0, (spec, work)
    assert outcomes["refused"] >= 30


def test_broken_checkpoint_weights_are_refused(tmp_path):
    m = tiny_model(seed=3)
    net = copy.deepcopy(m.net)
    with torch.no_grad():
        net.imnet.linears[0].weight[0, 0] = float("nan")
    path = save_safetensors(tmp_path / "nan.safetensors", net, m.spec)
    with pytest.raises(CheckpointError, match=r"nan\.safetensors: weights are broken: imnet\.layers\.0\.weight holds "
                                              r"non-finite values \(NaN or inf\)$"):
        load_model(path, device="cpu")


def test_truncated_and_lying_safetensors_are_one_line(tmp_path):
    good = tiny_checkpoint(tmp_path / "good.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good[: len(good) // 2])
    header = json.dumps({"w": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 40000000000]},
                         "__metadata__": {"spec": "{}"}}).encode()
    liar = tmp_path / "liar.safetensors"
    liar.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 64)
    for path in (cut, liar):
        with pytest.raises(CheckpointError) as info:
            load_model(path, device="cpu")
        assert str(info.value).startswith(f"{path}: not a readable safetensors file") and "\n" not in str(info.value)


# == 3. values ===================================================================================
def seen_by_the_model(a, low=(), high=()):
    """``a`` in float64 with the masked pixels at ``low`` set to the valid minimum and those at
    ``high`` to the valid maximum: what the model sees, as intensity.py's docstring says (NaN, -inf
    and negative nodata enter as ``lo``, +inf and positive nodata as ``hi``; for these images the
    robust range is the valid values' whole range). Written from that rule, not from the code."""
    f = np.asarray(a, np.float64).copy()
    bad = np.zeros(f.shape, bool)
    for ix in (*low, *high):
        bad[ix] = True
    lo, hi = f[~bad].min(), f[~bad].max()
    for ix in low:
        f[ix] = lo
    for ix in high:
        f[ix] = hi
    return f, bad


def assert_valid_pixels_are_bilinear(out, seen, bad, tol):
    """Every output pixel not carried from a masked one equals the bilinear interpolation of what
    the model sees (``bmodel`` renders exactly that), within ``tol``; and some of them lie beside a
    masked pixel (their bilinear taps reach it), so the masks' neighbourhood is really checked."""
    carried = nearest(bad, out.shape)
    expected = bilinear_numpy(seen, out.shape)
    beside = (bilinear_numpy(bad.astype(np.float64), out.shape) > 0) & ~carried
    assert beside.sum() >= 8
    assert np.abs(out[~carried].astype(np.float64) - expected[~carried]).max() < tol


def test_gis_nodata_stays_nodata_and_never_bleeds_into_the_values(bmodel, gen):
    a = gen.uniform(100.0, 3000.0, (12, 14)).astype(np.float32)
    a[2:5, 3:7] = F32_LOW
    a[9, 10] = -3.4e38  # the same sentinel as written by other tools
    assert (IntensityMap.fit(a).lo, IntensityMap.fit(a).hi) == (float(a[a > 0].min()), float(a[a > 0].max()))
    out = upscale(a, scale=2, model=bmodel)
    near = nearest(a, out.shape)
    nodata = near < -1e38
    assert np.array_equal(out[nodata], near[nodata]) and nodata.sum() == 4 * 13
    # the valid pixels: bilinear of the image with nodata seen as the lowest valid value, so none
    # comes near -3.4e38 (a nodata value interpolated would pull a neighbour to ~-1e38)
    seen, bad = seen_by_the_model(a, low=[np.s_[2:5, 3:7], np.s_[9, 10]])
    assert_valid_pixels_are_bilinear(out, seen, bad, tol=1e-5 * 2900)


def test_float32_values_wider_than_float32s_range(bmodel, gen):
    a = gen.uniform(-3e38, 3e38, (10, 11)).astype(np.float32)
    a.flat[:2] = -3e38, 3e38
    out = upscale(a, scale=2, model=bmodel)
    assert np.isfinite(out).all() and out.min() >= a.min() and out.max() <= a.max()
    expected = bilinear_numpy(a.astype(np.float64) / 1e38, out.shape) * 1e38
    assert np.abs(out - expected).max() < 1e-5 * 6e38


def test_float64_near_its_limits(bmodel):
    a = np.linspace(-1.7, 1.7, 8 * 9).reshape(8, 9) * 1e308  # (linspace itself would overflow)
    out = upscale(a, scale=1.5, model=bmodel)
    assert np.isfinite(out).all() and out.min() >= a.min() and out.max() <= a.max()
    expected = bilinear_numpy(a / 1e308, out.shape) * 1e308
    assert np.abs(out / 1e308 - expected / 1e308).max() < 1e-5 * 3.4


def test_float64_extremes_are_nodata(bmodel, gen):
    a = gen.random((8, 9)) * 50
    a[0, 0], a[7, 8] = np.finfo(np.float64).max, np.finfo(np.float64).min
    out = upscale(a, scale=2, model=bmodel)
    assert out[0, 0] == a[0, 0] and out[-1, -1] == a[7, 8]
    assert np.sum(np.abs(out) >= 1.79e308) == 8  # each carried to its 2 x 2 footprint, nowhere else
    seen, bad = seen_by_the_model(a, low=[(7, 8)], high=[(0, 0)])
    assert_valid_pixels_are_bilinear(out, seen, bad, tol=1e-5 * 50)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_64_bit_integers_at_both_ends_never_wrap(bmodel, gen, dtype):
    info = np.iinfo(dtype)
    a = gen.integers(info.min, info.max, (9, 10), dtype=dtype, endpoint=True)
    a[0, 0], a[-1, -1] = info.min, info.max
    out = upscale(a, scale=2, model=bmodel)
    assert out.dtype == dtype and out[0, 0] == info.min and out[-1, -1] == info.max
    # no wrap-around: a bilinear interpolation stays near its inputs (a wrap would jump by 2^64)
    expected = bilinear_numpy(a.astype(np.float64), out.shape)
    assert np.abs(out.astype(np.float64) - expected).max() < 1e-5 * 2.0**64


def test_64_bit_integers_far_from_zero_keep_their_detail(bmodel):
    base = 2**62
    a = (base + np.arange(8 * 9).reshape(8, 9) * 3).astype(np.int64)  # float64 would round these to 1024s
    out = upscale(a, scale=2, model=bmodel)
    expected = bilinear_numpy((a - base).astype(np.float64), out.shape)
    assert np.abs((out - base).astype(np.float64) - expected).max() <= 1.0
    assert len(np.unique(out)) > 100


def test_nan_stays_nan_and_inf_stays_inf_and_finite_values_are_bilinear(bmodel, gen):
    a = gen.uniform(-5.0, 5.0, (12, 13)).astype(np.float32)
    a[3:6, 2:8] = np.nan
    a[10, 1], a[0, 12] = np.inf, -np.inf
    out = upscale(a, scale=2.5, model=bmodel)
    near = nearest(a, out.shape)
    assert np.array_equal(np.isnan(out), np.isnan(near))
    assert np.array_equal(np.isposinf(out), np.isposinf(near)) and np.array_equal(np.isneginf(out), np.isneginf(near))
    seen, bad = seen_by_the_model(a, low=[np.s_[3:6, 2:8], (0, 12)], high=[(10, 1)])
    assert_valid_pixels_are_bilinear(out, seen, bad, tol=1e-5 * 10)


def test_an_all_nan_image_comes_back_all_nan(model):
    out = upscale(np.full((6, 7), np.nan, np.float32), scale=3, model=model)
    assert out.shape == (18, 21) and np.isnan(out).all()


def test_nan_in_one_colour_channel_masks_only_that_channel(bmodel, gen):
    a = gen.random((8, 9, 3)).astype(np.float32)
    a[2, 3, 1] = np.nan
    out = upscale(a, scale=2, model=bmodel)
    assert np.isnan(out).sum() == 4 and np.isnan(out[4:6, 6:8, 1]).all()


@pytest.mark.parametrize("value, dtype", [(7, np.uint16), (np.iinfo(np.int64).min, np.int64),
                                          (np.iinfo(np.uint64).max, np.uint64), (-2.5e300, np.float64),
                                          (1.0, np.float16)])
def test_constant_images_stay_exactly_constant(model, value, dtype):
    out = upscale(np.full((5, 6), value, dtype), scale=2, model=model)
    assert out.dtype == dtype and np.array_equal(out, np.full((10, 12), value, dtype))


def test_a_constant_image_with_holes_keeps_the_constant_and_the_holes(model):
    a = np.full((6, 6), 4.0)
    a[1, 1] = np.nan
    out = upscale(a, scale=2, model=model)
    assert np.isnan(out).sum() == 4 and np.all(out[~np.isnan(out)] == 4.0)


def test_dask_agrees_on_masked_values(model, gen):
    from napari_liif.dask_upscale import upscale_dask

    a = gen.uniform(0, 100, (20, 18)).astype(np.float32)
    a[4:7, 5:9], a[15, 3], a[0, 17] = np.nan, F32_LOW, np.inf
    expected = upscale(a, scale=1.5, model=model)
    got = upscale_dask(a, scale=1.5, model=model, chunks=(16, 11)).compute()
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    same = np.isfinite(expected)
    assert np.array_equal(got[~same & ~np.isnan(got)], expected[~same & ~np.isnan(expected)])
    assert np.abs(got[same] - expected[same]).max() < 1e-5


def test_the_cli_keeps_nan_and_prints_no_library_warning(capsys, tmp_path, ckpt, model, user_file, gen):
    a = gen.random((10, 11))
    a[2:4, 2:4] = np.nan
    a[8, 8] = np.finfo(np.float64).max  # numpy would warn about overflow somewhere on the way
    src = user_file("nan.npy", a)
    rc, out, err = run(capsys, "upscale", src, "--scale", "2", "-o", tmp_path / "o.npy", "--checkpoint", ckpt)
    assert (rc, out, err) == (0, f"wrote {tmp_path / 'o.npy'}\n", "")
    res = np.load(tmp_path / "o.npy")
    assert np.array_equal(np.isnan(res), np.isnan(nearest(a, res.shape)))
    assert np.array_equal(res, upscale(a, scale=2, model=model), equal_nan=True)


# == 4. layout ===================================================================================
def test_a_five_channel_tiff_is_upscaled_as_channels(capsys, tmp_path, ckpt, model, user_file, gen):
    a = gen.integers(0, 4000, (12, 14, 5)).astype(np.uint16)
    src = user_file("five.npy", a)
    rc, _, err = run(capsys, "upscale", src, "--scale", "2", "-o", tmp_path / "o.npy", "--checkpoint", ckpt)
    res = np.load(tmp_path / "o.npy")
    assert (rc, err) == (0, "") and res.shape == (24, 28, 5)
    for c in range(5):  # each channel is that channel upscaled on its own
        assert np.array_equal(res[..., c], upscale(a[..., c], scale=2, model=model)), c


def test_the_api_refuses_channels_it_would_resample(model, gen):
    a = gen.random((16, 14, 5)).astype(np.float32)
    with pytest.raises(ValueError) as info:
        upscale(a, scale=2, model=model)
    assert str(info.value) == ("image of shape (16, 14, 5): its last axis (5) looks like channels, not columns; pass "
                               "channel_axis=-1 (on the command line --channel-axis -1) to upscale each channel, or "
                               "rgb=False to upscale it as a stack of planes")
    planes = upscale(a, scale=2, model=model, rgb=False, limits=(0, 1))  # asked for: 16 planes of 14 x 5
    assert np.array_equal(planes, np.stack([upscale(p, scale=2, model=model, limits=(0, 1)) for p in a]))


def test_dask_command_detects_channels_too(capsys, tmp_path, ckpt, user_file, gen, model):
    a = gen.random((16, 18, 6)).astype(np.float32)
    src = user_file("six.npy", a)
    rc, _, _ = run(capsys, "upscale", src, "--scale", "2", "--dask", "-o", tmp_path / "o.zarr", "--checkpoint", ckpt,
                   "--quiet")
    # an OME-Zarr image: the channels first, as NGFF orders axes (c, y, x)
    res = np.asarray(read_zarr(tmp_path / "o.zarr"))
    assert rc == 0 and res.shape == (6, 32, 36)
    assert read_ome_metadata(tmp_path / "o.zarr")["axes"] == ["c", "y", "x"]
    for c in range(6):  # each channel is that channel upscaled on its own, in memory
        assert np.array_equal(res[c], upscale(a[..., c], scale=2, model=model)), c


# == 5. API and messages =========================================================================
@pytest.mark.parametrize("region, shown", [
    ((0, 0, 50, 4), None), ((-3, -3, 2, 2), None),  # partly outside: fine (border tiles)
    ((20, 0, 30, 5), "lies outside the image"), ((0, -9, 5, 0), "lies outside the image"),
    ((0, 0, float("nan"), 5), "finite"), ((0, 0, float("inf"), 5), "finite"), ((0, 0, 5), "four numbers"),
    ("0,0,5,5", "four numbers"), ((0, 0, "5", 5), "real number, got '5'"), ((True, 0, 5, 5), "real number, got True"),
    ((5, 0, 5, 5), "bottom > top"), ((0, 5, 5, 1), "right > left"), (42, "four numbers"),
    ((0, 0, 5, 1e300), None), ((0, 0, 5, 5j), "real number"),
])
def test_render_regions_are_checked(region, shown):
    if shown is None:
        assert check_region(region, (12, 14)) == tuple(float(v) for v in region)
    else:
        with pytest.raises(ValueError) as info:
            check_region(region, (12, 14))
        assert shown in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("shape", [(0, 5), (5,), (2.5, 3), ("4", 4), (True, 3), None])
def test_render_shapes_are_checked(shape):
    if shape is None:
        assert check_shape(None, (3, 4)) == (3, 4)
        return
    with pytest.raises(ValueError, match="shape must be \\(rows, cols\\) of positive integers"):
        check_shape(shape, (3, 4))


def test_render_and_encode_check_their_arguments(model, gen):
    field = model.encode(gen.random((8, 9)).astype(np.float32))
    with pytest.raises(ValueError, match=r"region \(20.0, 0.0, 30.0, 5.0\) lies outside the image"):
        field.render((20.0, 0.0, 30.0, 5.0), (4, 4))
    with pytest.raises(ValueError, match="region value must be a finite number, got nan"):
        field.render((0, 0, float("nan"), 5), (4, 4))
    with pytest.raises(ValueError, match=r"got values from 42 to 255 \(uint8\) \(uint8 data: divide by 255\)"):
        model.encode(np.arange(72, dtype=np.uint8).reshape(8, 9) * 3 + 42)
    with pytest.raises(TypeError, match="got dtype complex128"):
        model.encode(np.ones((8, 9), complex))
    with pytest.raises(ValueError, match="got NaN or inf"):
        model.encode(np.full((8, 9), np.nan, np.float32))


def test_unit_image_rules():
    assert check_unit_image(np.array([[0.0, 1.0]], np.float32)).dtype == np.float32
    assert check_unit_image(np.array([[True, False]])).dtype == bool
    check_unit_image(np.array([[1.0 + 5e-4]]))  # rounding of a [0, 1] mapping is tolerated
    with pytest.raises(ValueError, match=r"got values from -0.5 to 1.0 \(float64\); napari_liif.upscale maps any"):
        check_unit_image(np.array([[-0.5, 1.0]]))


@pytest.mark.parametrize("kwargs, error, shown", [
    ({"progress": 1}, TypeError, "progress must be a callable or None, got int"),
    ({"should_stop": "no"}, TypeError, "should_stop must be a callable or None, got str"),
    ({"rgb": "yes"}, ValueError, "rgb must be True, False or None, got 'yes'"),
    ({"cell": None}, ValueError, "cell must be one of on, off, clamp, got None"),
    ({"channel_axis": True}, ValueError, "channel_axis must be an integer, got True"),
])
def test_upscale_arguments_are_checked_before_any_work(kwargs, error, shown):
    with pytest.raises(error) as info:
        upscale(np.zeros((4, 5), np.float32), scale=2, model="/nonexistent/model.safetensors", **kwargs)
    assert str(info.value) == shown


def test_ragged_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"image must be an array of numbers, got list \("):
        upscale([[1, 2], [3]], scale=2)


def write_image_bytes(a, suffix):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return write_image(os.path.join(d, "x" + suffix), a).read_bytes()


def _files(gen):
    png = write_image_bytes(gen.integers(0, 256, (20, 22), dtype=np.uint8), ".png")
    png16 = write_image_bytes(gen.integers(0, 65535, (20, 22, 3)).astype(np.uint16), ".png")
    jpg = write_image_bytes(gen.integers(0, 256, (20, 22, 3), dtype=np.uint8), ".jpg")
    tif = write_image_bytes(gen.integers(0, 65535, (20, 22)).astype(np.uint16), ".tif")
    npy = write_image_bytes(gen.random((20, 22)), ".npy")
    return {
        "cut.png": (png[: len(png) // 2], "corrupt or truncated PNG file"),
        "cut16.png": (png16[: len(png16) // 2], "corrupt or truncated PNG file"),
        "cut.jpg": (jpg[: len(jpg) // 2], "corrupt or truncated JPEG file"),
        "cut.tif": (tif[: len(tif) // 2], "corrupt or truncated TIFF file"),
        "cut.npy": (npy[: len(npy) // 2], "corrupt or truncated NPY file"),
        "photo.png": (jpg, "not a PNG file (it looks like a JPEG file; rename it to .jpg)"),
        "scan.tif": (png, "not a TIFF file (it looks like a PNG file; rename it to .png)"),
        "noise.jpg": (bytes(range(256)) * 4, "not a JPEG file"),
        "empty.npy": (b"", "the file is empty (0 bytes), not an NPY file"),
        "header.npy": (b"\x93NUMPY\x01\x00\xff\xffgarbage", "corrupt or truncated NPY file"),
        "flipped.png": (png[:40] + bytes(b ^ 0xFF for b in png[40:]), "corrupt or truncated PNG file"),
    }


@pytest.mark.parametrize("name", ["cut.png", "cut16.png", "cut.jpg", "cut.tif", "cut.npy", "photo.png", "scan.tif",
                                  "noise.jpg", "empty.npy", "header.npy", "flipped.png"])
def test_every_reader_fails_with_one_line_of_ours(capsys, tmp_path, ckpt, user_file, name):
    content, expected = _files(np.random.default_rng(4))[name]
    src = user_file(name, content)
    rc, out, err = run(capsys, "upscale", src, "--scale", "2", "-o", tmp_path / "o.tif", "--checkpoint", ckpt)
    assert (rc, out) == (1, "")
    assert one_line(err) == f"napari-liif: error: {src}: {expected}"
    assert listing(tmp_path) == ["user"]


def test_a_garbage_zarr_store_is_one_line(capsys, tmp_path, ckpt, user_file):
    meta = user_file("bad.zarr/.zarray", '{"zarr_format": 2, "shape": "lots"')
    rc, _, err = run(capsys, "upscale", meta.parent, "--scale", "2", "--dask", "-o", tmp_path / "o.zarr",
                     "--checkpoint", ckpt, "--quiet")
    assert rc == 1 and one_line(err) == f"napari-liif: error: {meta.parent}: not a readable zarr store (bad or missing metadata)"


def test_dask_inputs_that_cannot_be_read_lazily_are_one_line(capsys, tmp_path, ckpt, input_guard, gen):
    group = zarr.open_group(str(tmp_path / "two.zarr"), mode="w", zarr_format=2)
    group.create_array("a", shape=(8, 8), dtype="f4")
    group.create_array("b", shape=(8, 8), dtype="f4")
    zarr.open_array(str(tmp_path / "empty.zarr"), mode="w", shape=(0, 5), dtype="u2", zarr_format=2)
    tifffile.imwrite(tmp_path / "ok.tif", u16(gen, (30, 40)))
    data = (tmp_path / "ok.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])  # the header is whole, the strips are not
    input_guard.protect(tmp_path / "two.zarr", tmp_path / "empty.zarr", tmp_path / "cut.tif")
    expected = {
        "two.zarr": f"a zarr group with arrays ['a', 'b']; give one of them as the input (e.g. "
                    f"{tmp_path / 'two.zarr' / 'a'}), or pass component=",
        "empty.zarr": "the image is empty (shape (0, 5))",
        "cut.tif": "corrupt or truncated TIFF file",
    }
    for name, why in expected.items():
        rc, _, err = run(capsys, "upscale", tmp_path / name, "--scale", "2", "--dask", "-o", tmp_path / "out",
                         "--checkpoint", ckpt, "--quiet")
        assert rc == 1 and one_line(err) == f"napari-liif: error: {tmp_path / name}: {why}"
    rc, out, _ = run(capsys, "upscale", tmp_path / "two.zarr" / "a", "--scale", "2", "--dask", "-o",
                     tmp_path / "out", "--checkpoint", ckpt, "--quiet")
    assert (rc, out) == (0, f"wrote {tmp_path / 'out' / 'a.zarr'}\n")


def test_a_bug_of_ours_is_still_one_line(capsys, monkeypatch, tmp_path):
    from napari_liif import cli

    def broken(args):
        raise KeyError("oops")

    monkeypatch.setattr(cli, "cmd_info", broken)
    rc, out, err = run(capsys, "info")
    assert (rc, out) == (1, "") and one_line(err) == "napari-liif: error: internal error, please report it: KeyError: 'oops'"


# == the guard and the rules themselves ============================================================
def test_the_input_guard_sees_changes_replacements_and_deletions(tmp_path):
    from conftest import InputGuard

    files = [tmp_path / n for n in ("a", "b", "c", "d")]
    for f in files:
        f.write_bytes(b"data")
    guard = InputGuard()
    guard.protect(tmp_path)
    os.utime(files[3], ns=(1, 1))  # metadata only: not a change of the file
    assert guard.changed() == []
    files[0].write_bytes(b"DATA")
    (tmp_path / "new").write_bytes(b"other data")
    os.replace(tmp_path / "new", files[1])
    files[2].unlink()
    assert guard.changed() == [f"{files[0]} was modified or replaced", f"{files[1]} was modified or replaced",
                               f"{files[2]} was deleted"]


def test_inputs_conflicts(tmp_path):
    raw = tmp_path / "store.zarr" / "raw.tif"
    raw.parent.mkdir()
    raw.write_bytes(b"x")
    other = tmp_path / "other.zarr"
    other.mkdir()
    os.link(raw, other / "0")
    (tmp_path / "in.zarr").mkdir()
    guard = Inputs([raw, tmp_path / "in.zarr"])
    assert guard.conflict(tmp_path / "store.zarr") == f"holds the input {raw}"
    assert guard.conflict(tmp_path) == f"holds the input {raw}"
    assert guard.conflict(tmp_path / "in.zarr" / "x.zarr") == f"is inside the input {tmp_path / 'in.zarr'}"
    assert guard.conflict(other) == f"holds {other / '0'}, another name (a hard link) for the input {raw}"
    assert guard.conflict(tmp_path / "fresh.zarr") is None
    with pytest.raises(OutputError, match="holds the input"):
        check_store(tmp_path / "store.zarr", guard, overwrite=True)


def test_masked_values_rule():
    a32 = np.array([1.0, np.nan, np.inf, -np.inf, F32_LOW, -3.4e38, 3.3e38], np.float32)
    assert masked(a32).tolist() == [False, True, True, True, True, True, False]
    a64 = np.array([1e300, 3.4e38, F32_LOW, np.finfo(np.float64).max, 3.5e38])
    assert masked(a64).tolist() == [False, True, True, True, False]
    assert masked(np.array([np.inf, 65504], np.float16)).tolist() == [True, False]
    assert masked(np.arange(3)) is None
