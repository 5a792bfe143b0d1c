"""Live-zoom geometry without a viewer: lattice, tiles, regions and the overlay frame."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_liif.live.viewport import PHASE_STEPS, Camera2D, Lattice, LayerGeometry, magnification, plan_view, screen_to_data


def test_visible_rect_matches_napari_formula():
    cam = Camera2D((100.0, 50.0), 4.0, (300, 400))
    assert cam.visible_rect() == (100 - 300 / 8, 50 - 400 / 8, 100 + 300 / 8, 50 + 400 / 8)


# Hand-worked example from napari's conventions (DESIGN.md, "napari facts"): camera centre (20, 10),
# zoom 4, canvas 8 x 16 -> visible world rect (20 - 8/8, 10 - 16/8, 20 + 8/8, 10 + 16/8) = (19, 8, 21, 12);
# screen pixel (i, j) is centred at world (19, 8) + ((i, j) + 0.5) / 4; a layer of scale (0.5, 0.25) and
# translate (10, 4) maps world w to data (w - translate) / scale, pixel centres at integers.
HAND_CAM = Camera2D((20.0, 10.0), 4.0, (8, 16))


def test_screen_to_data_by_hand():
    geom = LayerGeometry((100, 100), (0.5, 0.25), (10.0, 4.0))
    assert HAND_CAM.visible_rect() == (19.0, 8.0, 21.0, 12.0)
    assert screen_to_data(HAND_CAM, geom, 0, 0) == (18.25, 16.5)      # world (19.125, 8.125)
    assert screen_to_data(HAND_CAM, geom, 7, 15) == (21.75, 31.5)     # world (20.875, 11.875)


@pytest.mark.parametrize("shape,plan_shape", [((100, 100), (8, 16)), ((20, 30), (3, 13))],
                         ids=["whole-view", "clipped"])
def test_plan_by_hand(shape, plan_shape):
    """The overlay frame and engine regions, worked out by hand. Data rows 18.25, 18.75, ... and
    columns 16.5, 17.5, ... are on screen; a 20 x 30 layer keeps only centres below 19.5 (3 rows)
    and 29.5 (13 columns). Overlay: scale 1 / zoom, translate = the first screen pixel's centre.
    Engine region in pixel-edge units (data + 0.5), one sample per (0.5, 1.0) data pixels:
    from (18.75 - 0.25, 17.0 - 0.5) = (18.5, 16.5) to (18.5 + 0.5 rows, 16.5 + 1.0 cols)."""
    geom = LayerGeometry(shape, (0.5, 0.25), (10.0, 4.0))
    plan = plan_view(HAND_CAM, geom, tile=8)
    assert plan.shape == plan_shape
    assert plan.scale == (0.25, 0.25) and plan.translate == (19.125, 8.125)
    regions = [plan.region(t) for t in plan.tiles]
    top, left = min(r[0] for r in regions), min(r[1] for r in regions)
    bottom, right = max(r[2] for r in regions), max(r[3] for r in regions)
    assert (top, left, bottom, right) == (18.5, 16.5, 18.5 + 0.5 * plan_shape[0], 16.5 + 1.0 * plan_shape[1])
    assert sum(t.shape[0] * t.shape[1] for t in plan.tiles) == plan_shape[0] * plan_shape[1]


@pytest.mark.parametrize("center", [(63.5, 63.5), (10.3, 7.77), (-3.2, 40.01)])
@pytest.mark.parametrize("zoom", [1.5, 4.0, 7.3])
def test_lattice_sample_k_sits_on_screen_pixel_centre(center, zoom):
    cam = Camera2D(center, zoom, (61, 83))
    lat, (k_r, k_c) = Lattice.for_camera(cam)
    tl = cam.top_left
    for i in (0, 5, 60):
        screen = tl[0] + (i + 0.5) / zoom
        assert abs(lat.sample_world(0, k_r + i) - screen) * zoom <= 0.5 / PHASE_STEPS + 1e-9
    for j in (0, 82):
        screen = tl[1] + (j + 0.5) / zoom
        assert abs(lat.sample_world(1, k_c + j) - screen) * zoom <= 0.5 / PHASE_STEPS + 1e-9


def test_whole_pixel_pan_keeps_the_lattice_subpixel_pan_changes_it():
    cam = Camera2D((40.123, 17.9), 3.7, (100, 120))
    lat, origin = Lattice.for_camera(cam)
    moved, origin2 = Lattice.for_camera(Camera2D((40.123 + 37 / 3.7, 17.9 - 11 / 3.7), 3.7, (100, 120)))
    assert moved.key == lat.key
    assert (origin2[0] - origin[0], origin2[1] - origin[1]) == (37, -11)
    shifted, _ = Lattice.for_camera(Camera2D((40.123 + 0.3 / 3.7, 17.9), 3.7, (100, 120)))
    assert shifted.key != lat.key


def test_inside_range_is_the_samples_with_centres_in_the_image():
    geom = LayerGeometry((10, 20), (2.0, 0.5), (3.0, -1.0))
    lat = Lattice(5.0, (0.25, 0.75))
    for axis in (0, 1):
        k0, k1 = lat.inside(axis, geom)
        for k in range(k0 - 3, k1 + 3):
            edge = lat.sample_edge(axis, k + 0.5, geom)
            assert (k0 <= k < k1) == (0 <= edge < geom.shape[axis]), (axis, k, edge)


def test_plan_covers_exactly_the_visible_image_pixels_once():
    geom = LayerGeometry((50, 70))
    cam = Camera2D((20.3, 60.1), 4.0, (90, 130))
    plan = plan_view(cam, geom, tile=32)
    cover = np.zeros(plan.shape, int)
    for t in plan.tiles:
        cover[plan.slot(t)] += 1
    assert cover.max() == 1
    # every screen pixel whose centre is inside the image is covered
    lat, (o_r, o_c) = Lattice.for_camera(cam)
    for i in range(cam.canvas[0]):
        for j in range(0, cam.canvas[1], 7):
            # scale 1, translate 0: data = world = centre - canvas / (2 zoom) + (i + 0.5) / zoom
            y, x = 20.3 - 90 / 8 + (i + 0.5) / 4, 60.1 - 130 / 8 + (j + 0.5) / 4
            inside = -0.5 <= y < 49.5 and -0.5 <= x < 69.5
            r, c = o_r + i - plan.rows[0], o_c + j - plan.cols[0]
            covered = 0 <= r < plan.shape[0] and 0 <= c < plan.shape[1] and cover[r, c] == 1
            if inside:
                assert covered, (i, j)


def test_tiles_are_ordered_centre_out():
    plan = plan_view(Camera2D((256.0, 256.0), 4.0, (768, 1024)), LayerGeometry((512, 512)), tile=128)
    assert len(plan.tiles) == 6 * 8
    centre = np.array([plan.rows[0] + 384, plan.cols[0] + 512])
    d = [np.hypot((t.r0 + t.r1) / 2 - centre[0], (t.c0 + t.c1) / 2 - centre[1]) for t in plan.tiles]
    assert d == sorted(d)
    assert d[0] <= 128 / math.sqrt(2) + 1e-9


def test_region_and_overlay_frame_agree_with_the_screen():
    """The engine samples tile pixel (i, j) at the data point that the screen pixel shows."""
    geom = LayerGeometry((40, 60), (0.5, 0.5), (10.0, -4.0))
    cam = Camera2D((18.2, 7.7), 9.0, (70, 90))
    plan = plan_view(cam, geom, tile=24)
    lat, (o_r, o_c) = Lattice.for_camera(cam)
    for t in plan.tiles[:4]:
        top, left, bottom, right = plan.region(t)
        rows, cols = t.shape
        for i, j in ((0, 0), (rows - 1, cols - 1)):
            edge = (top + (i + 0.5) * (bottom - top) / rows, left + (j + 0.5) * (right - left) / cols)
            # overlay pixel (r, c) is drawn centred at world translate + (r, c) * scale
            r, c = t.r0 - plan.rows[0] + i, t.c0 - plan.cols[0] + j
            world = (plan.translate[0] + r * plan.scale[0], plan.translate[1] + c * plan.scale[1])
            data = geom.world_to_data(world)
            assert edge[0] == pytest.approx(data[0] + 0.5, abs=1e-9)
            assert edge[1] == pytest.approx(data[1] + 0.5, abs=1e-9)
            # ... which is the screen pixel that the lattice index points at
            sy, sx = screen_to_data(cam, geom, t.r0 + i - o_r, t.c0 + j - o_c)
            assert abs(sy - data[0]) * cam.zoom * geom.scale[0] < 1 / PHASE_STEPS
            assert abs(sx - data[1]) * cam.zoom * geom.scale[1] < 1 / PHASE_STEPS


def test_plan_is_none_when_the_layer_is_out_of_view():
    assert plan_view(Camera2D((500.0, 500.0), 4.0, (100, 100)), LayerGeometry((64, 64))) is None


def test_magnification_and_validation():
    assert magnification(Camera2D((0, 0), 3.0, (10, 10)), LayerGeometry((5, 5), (2.0, 0.25))) == (6.0, 0.75)
    with pytest.raises(ValueError, match="zoom"):
        Camera2D((0, 0), 0.0, (10, 10))
    with pytest.raises(ValueError, match="scale"):
        LayerGeometry((5, 5), (-1.0, 1.0))
    with pytest.raises(ValueError, match="tile"):
        plan_view(Camera2D((0, 0), 2.0, (10, 10)), LayerGeometry((5, 5)), tile=0)


@pytest.mark.parametrize("dpr", [2.0, 1.5])
def test_hidpi_one_sample_per_physical_pixel(dpr):
    cam = Camera2D((20.3, 31.7), 3.1, (100, 160))
    phys = cam.physical(dpr)
    assert phys.zoom == 3.1 * dpr and phys.canvas == (round(100 * dpr), round(160 * dpr))
    assert phys.visible_rect() == pytest.approx(cam.visible_rect())  # the same view
    geom = LayerGeometry((64, 80))
    plan = plan_view(phys, geom, tile=64)
    # the overlay's samples are physical pixels: spacing 1 / (zoom dpr) world units, dpr^2 per logical pixel
    assert plan.scale == pytest.approx((1 / (3.1 * dpr),) * 2)
    n = sum(t.shape[0] * t.shape[1] for t in plan.tiles)
    n1 = sum(t.shape[0] * t.shape[1] for t in plan_view(cam, geom, tile=64).tiles)
    assert abs(n / n1 - dpr * dpr) < 0.02
    # physical pixel (i, j) is centred at world tl + (i + 0.5) / (zoom dpr)
    (top, left), k = phys.top_left, 37
    lat, (o_r, o_c) = Lattice.for_camera(phys)
    assert lat.sample_world(0, o_r + k) == pytest.approx(top + (k + 0.5) / phys.zoom, abs=1 / (256 * phys.zoom))
    assert cam.physical(1.0) is cam
    with pytest.raises(ValueError, match="device pixel ratio must be a positive finite number, got 0"):
        cam.physical(0)
