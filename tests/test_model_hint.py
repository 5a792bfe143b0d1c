"""The CLI's one-line hint when the photo model meets single-channel data deeper than 8 bits."""

from __future__ import annotations

import io

import numpy as np
import pytest

from napari_liif.batch import plan
from napari_liif.io import write_image
from napari_liif.upscale_cmd import model_hint


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def files(tmp_path):
    g = np.random.default_rng(0)
    made = {"u16.tif": g.integers(0, 4000, (12, 14)).astype(np.uint16),
            "f32.tif": g.random((12, 14)).astype(np.float32),
            "u8.png": g.integers(0, 255, (12, 14)).astype(np.uint8),
            "rgb16.tif": g.integers(0, 4000, (12, 14, 3)).astype(np.uint16)}
    return {name: write_image(tmp_path / name, a) for name, a in made.items()}


@pytest.mark.parametrize("name, checkpoint, shown", [
    ("u16.tif", None, True), ("f32.tif", "default", True),  # fluorescence-like, photo model
    ("u16.tif", "microscopy", False), ("u8.png", None, False), ("rgb16.tif", None, False),
])
def test_hint_names_the_file_and_the_microscopy_model(tmp_path, files, name, checkpoint, shown):
    jobs = plan([str(files[name])], str(tmp_path / "out"), scale=2)
    out = Terminal()
    assert model_hint(checkpoint, jobs, stream=out) is shown
    lines = out.getvalue().splitlines()
    assert len(lines) == (1 if shown else 0)
    if shown:
        assert name in lines[0] and "--checkpoint microscopy" in lines[0]


def test_no_hint_in_logs_or_when_quiet(tmp_path, files):
    jobs = plan([str(files["u16.tif"])], str(tmp_path / "out"), scale=2)
    assert not model_hint(None, jobs, stream=io.StringIO())  # not a terminal: a pipe or a log
    assert not model_hint(None, jobs, quiet=True, stream=Terminal())
