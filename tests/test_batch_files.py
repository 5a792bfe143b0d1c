"""File batches: input discovery, output names, never overwriting inputs, resumability and
failure reports. ``upscale_one`` is a pixel-doubling stand-in for the model: the batch logic
does not depend on it, and its results are easy to check exactly."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_liif.batch import BatchError, BatchReport, find_inputs, plan, run_batch, scale_tag
from napari_liif.io import read_image, write_image


def double(a):
    return np.repeat(np.repeat(a, 2, 0), 2, 1)


@pytest.fixture
def folder(tmp_path, input_guard):
    """in/ with a PNG, a 16-bit TIFF, an NPY, a corrupt PNG, a text file and a hidden partial file,
    guarded: a test that changes one of them fails."""
    d = tmp_path / "in"
    g = np.random.default_rng(5)
    write_image(d / "a.png", g.integers(0, 256, (6, 7, 3), dtype=np.uint8))
    write_image(d / "b.tif", g.integers(0, 4096, (6, 7)).astype(np.uint16))
    write_image(d / "c.npy", g.random((6, 7)).astype(np.float32))
    (d / "d.png").write_bytes(b"not a png at all")
    (d / "notes.txt").write_text("ignored")
    (d / ".a.partial.png").write_bytes(b"left over by an interrupted run")
    input_guard.protect(d)
    return d


def names(paths):
    return [p.name for p in paths]


def test_find_inputs_lists_images_sorted_and_skips_hidden_and_other_files(folder):
    assert names(find_inputs([str(folder)])) == ["a.png", "b.tif", "c.npy", "d.png"]
    assert names(find_inputs([str(folder / "*.p*")])) == ["a.png", "d.png"]
    # a file named explicitly is kept whatever its type; duplicates are dropped
    assert names(find_inputs([str(folder / "notes.txt"), str(folder / "a.png"), str(folder)])) == [
        "notes.txt", "a.png", "b.tif", "c.npy", "d.png"]
    with pytest.raises(BatchError, match=r"nope\.png: no such file or folder"):
        find_inputs([str(folder / "a.png"), str(folder / "nope.png")])
    with pytest.raises(BatchError, match=r"no image files .* found in .*\*\.bmp"):
        find_inputs([str(folder / "*.bmp")])


def test_scale_tags():
    assert scale_tag(2) == "_liif_x2"
    assert scale_tag(2.5) == "_liif_x2.5"
    assert scale_tag((2, 3)) == "_liif_x2x3"
    assert scale_tag(size=(64, 80)) == "_liif_64x80"


def test_folder_to_folder_keeps_names(folder, tmp_path):
    out = tmp_path / "out"
    jobs = plan([str(folder)], str(out), scale=2)
    assert [(j.src.name, j.dst) for j in jobs] == [
        ("a.png", out / "a.png"), ("b.tif", out / "b.tif"), ("c.npy", out / "c.npy"), ("d.png", out / "d.png")]
    jobs = plan([str(folder / "a.png"), str(folder / "b.tif")], str(out), scale=2, fmt="tif")
    assert [j.dst for j in jobs] == [out / "a.tif", out / "b.tif"]


def test_single_file_outputs(folder, tmp_path):
    [job] = plan([str(folder / "a.png")], str(tmp_path / "x.tif"), scale=2)
    assert job.dst == tmp_path / "x.tif"
    [job] = plan([str(folder / "a.png")], str(tmp_path / "newdir"), scale=2)  # no suffix: a folder
    assert job.dst == tmp_path / "newdir" / "a.png"
    [job] = plan([str(folder / "a.png")], None, scale=2)
    assert job.dst == folder / "a_liif_x2.png"
    [job] = plan([str(folder / "b.tif")], None, size=(30, 40), suffix="_big")
    assert job.dst == folder / "b_big.tif"


def test_beside_inputs_earlier_results_are_not_inputs_again(folder):
    jobs = plan([str(folder)], None, scale=2)
    assert [j.dst.name for j in jobs] == ["a_liif_x2.png", "b_liif_x2.tif", "c_liif_x2.npy", "d_liif_x2.png"]
    run_batch(jobs, double)
    again = plan([str(folder)], None, scale=2)  # a_liif_x2.png etc. now sit in the folder
    assert [j.src.name for j in again] == ["a.png", "b.tif", "c.npy", "d.png"]
    # a different scale does take them (they are images like any other)
    assert len(plan([str(folder)], None, scale=3)) == 7


def test_an_output_equal_to_an_input_is_refused(folder, tmp_path):
    a = folder / "a.png"
    with pytest.raises(BatchError, match=r"a\.png: output would overwrite an input"):
        plan([str(a)], str(a), scale=2)
    with pytest.raises(BatchError, match="output would overwrite an input"):
        plan([str(folder)], str(folder), scale=2)  # -o the input folder itself
    with pytest.raises(BatchError, match="output would overwrite an input"):
        plan([str(a)], None, scale=2, suffix="")  # an empty suffix names the input
    link = tmp_path / "link.png"
    os.link(a, link)  # another name for the same file
    with pytest.raises(BatchError, match=r"link\.png: output would overwrite an input"):
        plan([str(a)], str(link), scale=2)


def test_other_bad_plans(folder, tmp_path):
    write_image(folder / "a.tif", np.ones((4, 4), np.uint8))
    with pytest.raises(BatchError, match="several inputs map to the same output name"):
        plan([str(folder / "a.png"), str(folder / "a.tif")], str(tmp_path / "o"), scale=2, fmt="npy")
    with pytest.raises(BatchError, match=r"out\.png: with several inputs -o must be a folder"):
        plan([str(folder)], str(tmp_path / "out.png"), scale=2)
    with pytest.raises(BatchError, match=r"x\.bmp: unsupported output type \.bmp"):
        plan([str(folder / "a.png")], str(tmp_path / "x.bmp"), scale=2)
    with pytest.raises(BatchError, match="unsupported output format 'gif'"):
        plan([str(folder / "a.png")], None, scale=2, fmt="gif")


def test_run_reports_the_corrupt_file_and_processes_the_rest(folder, tmp_path):
    out = tmp_path / "out"
    seen = []
    jobs = plan([str(folder)], str(out), scale=2)
    report = run_batch(jobs, double, on_file=lambda k, n, p: seen.append((k, n, p.name)))
    assert names(report.done) == ["a.png", "b.tif", "c.npy"] and report.skipped == []
    [(bad, why)] = report.failed
    assert bad == folder / "d.png" and why == "not a PNG file"
    assert seen == [(1, 4, "a.png"), (2, 4, "b.tif"), (3, 4, "c.npy"), (4, 4, "d.png")]
    for name in ("a.png", "b.tif", "c.npy"):
        src, dst = read_image(folder / name), read_image(out / name)
        assert dst.dtype == src.dtype and np.array_equal(dst, double(src))
    # no partial files; the hidden log records the outputs as ours
    assert sorted(p.name for p in out.iterdir()) == [".napari-liif-outputs", "a.png", "b.tif", "c.npy"]
    text = report.summary()
    assert text.startswith("3 upscaled, 0 skipped (output exists), 1 failed in ")
    assert text.splitlines()[1:] == [f"  failed: {folder / 'd.png'}: {why}"]


def test_existing_outputs_of_ours_are_skipped_unless_overwrite(folder, tmp_path):
    out = tmp_path / "out"
    jobs = plan([str(folder / "a.png"), str(folder / "b.tif")], str(out), scale=2)
    run_batch(jobs, double)
    again = plan([str(folder / "a.png"), str(folder / "b.tif")], str(out), scale=2)
    assert [j.action for j in again] == ["skip", "skip"]
    report = run_batch(jobs, double)
    assert names(report.skipped) == ["a.png", "b.tif"] and report.done == [] and report.failed == []
    assert report.summary().startswith("0 upscaled, 2 skipped (output exists), 0 failed")
    report = run_batch(jobs, double, overwrite=True)
    assert names(report.done) == ["a.png", "b.tif"]
    assert np.array_equal(read_image(out / "b.tif"), double(read_image(folder / "b.tif")))


def test_an_output_the_user_changed_is_refused_unless_overwrite(folder, tmp_path):
    out = tmp_path / "out"
    jobs = plan([str(folder / "a.png"), str(folder / "b.tif")], str(out), scale=2)
    run_batch(jobs, double)
    sentinel = np.zeros((3, 3), np.uint16)
    write_image(out / "b.tif", sentinel, overwrite=True)  # a result the user edited: no longer ours
    with pytest.raises(BatchError, match=r"b\.tif: exists and was not written by napari-liif .or was changed "
                                         r"since.; pass --overwrite to replace it"):
        plan([str(folder / "a.png"), str(folder / "b.tif")], str(out), scale=2)
    report = run_batch(jobs, double)  # planned before the edit: the file is refused when its turn comes
    assert names(report.skipped) == ["a.png"] and report.done == []
    assert [(p.name, why[:42]) for p, why in report.failed] == [("b.tif", "exists and was not written by napari-liif ")]
    assert np.array_equal(read_image(out / "b.tif"), sentinel)
    jobs = plan([str(folder / "a.png"), str(folder / "b.tif")], str(out), scale=2, overwrite=True)
    assert names(run_batch(jobs, double, overwrite=True).done) == ["a.png", "b.tif"]
    assert np.array_equal(read_image(out / "b.tif"), double(read_image(folder / "b.tif")))


def test_failures_of_the_upscale_and_of_writing_are_reported_one_line(folder, tmp_path):
    def boom(a):
        if a.dtype == np.uint16:
            raise MemoryError("the output of shape (9, 9) needs 9.0 GiB\nsecond line")
        if a.dtype == np.float32:
            raise TypeError("cannot upscale this")
        return a.astype(np.float32)  # a float result cannot be written as PNG

    jobs = plan([str(folder / "a.png"), str(folder / "b.tif"), str(folder / "c.npy")], str(tmp_path / "o"), scale=2)
    report = run_batch(jobs, boom)
    assert report.done == []
    assert [(p.name, why) for p, why in report.failed] == [
        ("a.png", "PNG stores bool/uint8/uint16, not float32; write .tif or .npy to keep this dtype"),
        ("b.tif", "out of memory (the output of shape (9, 9) needs 9.0 GiB)"),
        ("c.npy", "cannot upscale this"),
    ]
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []  # nothing half-written


def test_should_stop_ends_the_batch_between_files(folder, tmp_path):
    jobs = plan([str(folder)], str(tmp_path / "o"), scale=2)
    calls = []
    report = run_batch(jobs, double, should_stop=lambda: calls.append(1) or len(calls) > 2)
    assert names(report.done) == ["a.png", "b.tif"] and report.failed == []


def test_report_defaults():
    r = BatchReport()
    assert r.summary() == "0 upscaled, 0 skipped (output exists), 0 failed in 0.0 s"
