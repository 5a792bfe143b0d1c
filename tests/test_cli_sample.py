"""`napari-liif sample`: writes the bundled samples, is idempotent, never overwrites other files."""

import numpy as np

from napari_liif import samples
from napari_liif.cli import main
from napari_liif.io import read_image


def test_sample_photo_written_and_rerun_is_a_no_op(tmp_path, capsys):
    out = tmp_path / "photo.png"
    assert main(["sample", "photo", str(out)]) == 0
    assert np.array_equal(read_image(out), samples.sample_photo()[0][0])
    stamp = out.stat().st_mtime_ns
    assert main(["sample", "photo", str(out)]) == 0
    assert out.stat().st_mtime_ns == stamp
    assert "already holds" in capsys.readouterr().out


def test_sample_refuses_to_overwrite_another_file(tmp_path, capsys):
    out = tmp_path / "mine.png"
    out.write_bytes(b"not the sample")
    assert main(["sample", "photo", str(out)]) == 2
    assert out.read_bytes() == b"not the sample"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mine.png" in err[0]


def test_sample_cells_keeps_16_bit(tmp_path):
    out = tmp_path / "cells.tif"
    assert main(["sample", "cells", str(out)]) == 0
    a = read_image(out)
    assert a.dtype == np.uint16 and np.array_equal(a, samples.sample_cells()[0][0])
