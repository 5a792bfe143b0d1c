"""The sample grid: its tables against hand values, and render_grid against render for the
whole grid, slices, steps and windows (shifted grids)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_liif.field import render_together
from napari_liif.grid import Axis, SampleGrid
from napari_liif.models.liif import ENSEMBLE_SHIFTS, EPS_SHIFT

pytestmark = pytest.mark.usefixtures("single_thread")

IMAGE = np.random.default_rng(8).random((40, 46, 3)).astype(np.float32)
OUT = (101, 77)  # x2.525 and x1.674: blocks of 64 cut rows and columns unevenly


def test_axis_tables_hand_values():
    # 4 latents (centres -0.75 -0.25 0.25 0.75), 8 samples over the whole axis (x2): centres
    # -0.875 + 0.25 k; shift -1 looks 0.25 (+1e-6) lower, shift +1 0.25 (+1e-6) higher
    ax = Axis.regular(4, 0.0, 4.0, 8, (-1, 1), 1e-6)
    assert ax.coords.tolist() == [-0.875, -0.625, -0.375, -0.125, 0.125, 0.375, 0.625, 0.875]
    assert ax.index[-1].tolist() == [0, 0, 0, 1, 1, 2, 2, 3]
    assert ax.index[1].tolist() == [0, 1, 1, 2, 2, 3, 3, 3]
    np.testing.assert_allclose(ax.rel[-1].numpy(), [-0.5, 0.5, 1.5, 0.5, 1.5, 0.5, 1.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(ax.rel[1].numpy(), [-0.5, -1.5, -0.5, -1.5, -0.5, -1.5, -0.5, 0.5], atol=1e-6)
    # bilinear taps (border padding): position (c + 1) * 4 / 2 - 0.5 = -0.25, 0.25, ..., 3.25
    assert ax.tap0.tolist() == [0, 0, 0, 1, 1, 2, 2, 3] and ax.tap1.tolist() == [1, 1, 1, 2, 2, 3, 3, 3]
    np.testing.assert_allclose(ax.frac.numpy(), [0, 0.25, 0.75, 0.25, 0.75, 0.25, 0.75, 0], atol=1e-6)
    assert ax.latent_range(2, 5) == (0, 3) and ax.tap_range(2, 5) == (0, 3)


def test_slicing_and_shifting_are_values():
    g = SampleGrid.regular((4, 6), (0, 0, 4, 6), (8, 9), ENSEMBLE_SHIFTS, EPS_SHIFT, "on")
    sub = g[1:7:2, ::3]
    assert sub.shape == (3, 3) and sub.cell == g.cell and sub.rel_cell == g.rel_cell == (1.0, 4 / 3)
    assert torch.equal(sub.y.coords, g.y.coords[1:7:2]) and torch.equal(sub.x.index[1], g.x.index[1][::3])
    moved = g.shifted(1, 2)
    assert moved.origin == (1, 2) and moved.frame == g.frame == (4, 6)
    assert torch.equal(moved.y.index[-1], g.y.index[-1] - 1) and torch.equal(moved.x.tap1, g.x.tap1 - 2)
    assert torch.equal(moved.y.rel[1], g.y.rel[1]) and g.origin == (0, 0)  # the original is unchanged
    with pytest.raises(TypeError, match="positive step"):
        g[::-1, :]
    with pytest.raises(TypeError, match=r"grid\[rows, cols\]"):
        g[1:3]


@pytest.fixture(params=[False, True], ids=["plain", "bilinear"])
def field(request, make_liif, as_model):
    net, spec = make_liif("edsr-baseline", bilinear_residual=request.param)
    return as_model(net, spec).encode(IMAGE)


@pytest.mark.parametrize("cell", ["on", "clamp"])
def test_render_grid_equals_render(field, cell):
    whole = field.render(None, OUT, cell=cell)
    grid = field.grid(None, OUT, cell)
    assert np.array_equal(field.render_grid(grid), whole)
    # slices starting on the renderer's blocks decode the same batches: bit for bit
    assert np.array_equal(field.render_grid(grid[64:, 0:64]), whole[64:, :64])
    # any other slice or step gives the same samples (batches of other sizes: float rounding)
    for rows, cols in ((slice(3, 90), slice(17, 70)), (slice(None, None, 2), slice(1, None, 3))):
        assert float(np.abs(field.render_grid(grid[rows, cols]) - whole[rows, cols]).max()) < 1e-6


def test_a_shifted_grid_renders_from_a_window(field, as_model):
    """A window of the image, encoded on its own, renders the whole image's grid shifted to the
    window's origin exactly as the whole field does (what each dask chunk does), as long as the
    window reaches a halo past the latents and taps its samples read."""
    whole = field.render(None, OUT)
    grid = field.grid(None, OUT)[64:101, 0:64]
    (y0, y1), (x0, x1) = grid.y.latent_range(), grid.x.latent_range()
    h = field.halo
    wy0, wy1, wx0, wx1 = max(0, y0 - 1 - h), min(40, y1 + 1 + h), max(0, x0 - 1 - h), min(46, x1 + 1 + h)
    window = field.model.encode(IMAGE[wy0:wy1, wx0:wx1])
    got = window.render_grid(grid.shifted(wy0, wx0))
    assert (wy0, wx0) != (0, 0) and np.array_equal(got, whole[64:101, 0:64])
    # unshifted, the grid reads outside the window: a clear error, not garbage
    with pytest.raises(ValueError, match=r"outside this field's .*grid\.shifted\(y0, x0\)"):
        window.render_grid(grid)


def test_a_grid_of_another_ensemble_is_refused(field):
    g = SampleGrid.regular(field.shape, (0, 0, 40, 46), (8, 8), ((0, 0),), 0.0, "on")
    with pytest.raises(ValueError, match="ensemble"):
        field.render_grid(g)


def test_progress_stop_and_out(field):
    grid = field.grid(None, OUT)
    out = np.full(OUT + (3,), -1.0, np.float32)
    seen = []
    field.render_grid(grid, out=out, progress=lambda done, total: seen.append((done, total)),
                      should_stop=lambda: len(seen) >= 2)
    assert seen == [(1, 4), (2, 4)]  # 2 x 2 blocks of 64; stopped after two
    assert (out == -1).sum() == 3 * (OUT[0] * OUT[1] - 64 * 64 - 64 * (OUT[1] - 64))  # the rest untouched
    with pytest.raises(ValueError, match=r"out has shape \(3, 3, 3\)"):
        field.render_grid(grid, out=np.zeros((3, 3, 3), np.float32))


@pytest.mark.parametrize("zoom,lo,n_out,most_slots", [(4.0, 10.0, 128, 132), (4.15, 10.3, 128, 144),
                                                      (1.5, 0.2, 64, 64), (0.5, 0.0, 40, 40), (32.0, 3.0, 128, 128)])
def test_runs_group_samples_by_the_latents_they_read(zoom, lo, n_out, most_slots):
    """Every slot of a piece reads the piece's latent for every shift, every sample sits in
    exactly one slot that holds it, and padding stays small (at zoom 4.15, runs of 4 and 5
    samples: pieces of 4 pad 12.5 %, where padding every run to 5 would pad 19 %)."""
    axis = Axis.regular(200, lo, lo + n_out / zoom, n_out, [-1, 1], EPS_SHIFT)
    runs = axis.runs(0, n_out)
    for index in axis.index.values():
        assert torch.equal(index[runs.slot], index[runs.first][None, :].expand_as(runs.slot))
    assert torch.equal(runs.slot.reshape(-1)[runs.unpad], torch.arange(n_out))
    assert runs.slot.shape == (runs.n, runs.count) and runs.slot.numel() <= most_slots


def test_runs_start_hand_values():
    """``start`` is the latent of piece 0 for each shift when every shift's pieces read
    consecutive latents. 16 samples over pixel edges [2.5, 6.5] of 8 latents (zoom 4, samples at
    2.625 .. 6.375): shift -1 reads latents 2, 3, 4, 5 in runs of 4, shift +1 reads 3 .. 6.
    Over [2, 6] the runs are 2, 4, 4, 4, 2 samples, cut into pieces of 2 (two pieces read one
    latent): no start. From the image's edge, shift -1 is clamped to latent 0 for the first
    samples (latents 0, 0, 1, ...): no start."""
    runs = Axis.regular(8, 2.5, 6.5, 16, [-1, 1], EPS_SHIFT).runs()
    assert (runs.start, runs.n, runs.count) == ((2, 3), 4, 4)
    assert runs.moved(2).start == (0, 1) and runs.moved(2).n == 4
    assert Axis.regular(8, 2.0, 6.0, 16, [-1, 1], EPS_SHIFT).runs().start is None
    assert Axis.regular(8, 0.0, 4.0, 16, [-1, 1], EPS_SHIFT).runs().start is None


def test_fields_rendered_together_are_each_as_alone(field, as_model):
    """Several fields in one call (the channels of an image): each comes back bit for bit as its
    own render, with the blocks of all on two workers and counted together; fields of another
    shape are refused with the fix."""
    other = field.model.encode(IMAGE[:, ::-1] * 0.5)
    third = field.model.encode(IMAGE[::-1])
    grid = field.grid(None, OUT)
    alone = [f.render_grid(grid) for f in (field, other, third)]
    assert not np.array_equal(alone[0], alone[1])
    for f in (field, other, third):
        f.workers = 2
    seen = []
    together = render_together([field, other, third], grid, progress=lambda done, total: seen.append((done, total)))
    assert all(np.array_equal(a, b) for a, b in zip(together, alone))
    assert seen[-1] == (12, 12) and len(seen) == 12  # 2 x 2 blocks of 64 per field
    with pytest.raises(ValueError, match="one shape .* render them one by one"):
        render_together([field, field.model.encode(IMAGE[:20])], grid)
    with pytest.raises(ValueError, match="1 output arrays for 2 fields; give one per field"):
        render_together([field, other], grid, outs=[np.empty(OUT + (3,), np.float32)])
