"""Progress of ``napari-liif upscale``: bars on a terminal only; in a log one line per long file."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

from batch_helpers import tiny_checkpoint
from napari_liif import upscale_cmd
from napari_liif.cli import main


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def files(tmp_path, input_guard):
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.npy", "b.npy"):
        np.save(src / name, rng.integers(0, 4000, (20, 24)).astype(np.uint16))
    input_guard.protect(src)
    return ckpt, src


def test_a_log_gets_one_line_per_long_file(files, tmp_path, capsys, monkeypatch):
    ckpt, src = files
    monkeypatch.setattr(upscale_cmd, "LONG_FILE_PX", 20 * 24 * 4)  # each file's output counts as long
    assert main(["upscale", str(src), "--scale", "2", "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt)]) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert [ln.split(" done in ")[0] for ln in lines] == [f"napari-liif: [1/2] {src / 'a.npy'}",
                                                          f"napari-liif: [2/2] {src / 'b.npy'}"]
    assert out.startswith("2 upscaled, 0 skipped")
    monkeypatch.setattr(upscale_cmd, "LONG_FILE_PX", 20 * 24 * 4 + 1)  # one value short: not long, no line
    assert main(["upscale", str(src), "--scale", "2", "-o", str(tmp_path / "out2"), "--checkpoint", str(ckpt)]) == 0
    assert capsys.readouterr().err == ""


def test_dask_bar_on_a_terminal_only(files, tmp_path, capsys, monkeypatch):
    ckpt, src = files
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(upscale_cmd, "BAR_DELAY_S", 0.0)
    assert main(["upscale", str(src / "a.npy"), "--scale", "2", "--dask", "-o", str(tmp_path / "a.zarr"),
                 "--checkpoint", str(ckpt)]) == 0
    shown = term.getvalue()
    # tqdm redraws one line with carriage returns (never a line per update) and clears it at the end
    assert "task" in shown and shown.count("\n") == 0
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["upscale", str(src / "b.npy"), "--scale", "2", "--dask", "-o", str(tmp_path / "b.zarr"),
                 "--checkpoint", str(ckpt)]) == 0
    assert capsys.readouterr() == (f"wrote {tmp_path / 'b.zarr'}\n", "")
