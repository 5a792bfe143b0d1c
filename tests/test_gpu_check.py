"""benchmarks/gpu_check.py without a GPU: it says so and exits 0, and each of its parts runs
(on the CPU, at small sizes) and reports what it measured, so the CUDA run is not its first."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("single_thread")

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_without_cuda_it_says_so_and_exits_0(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpu_check: no CUDA device here (torch ") and out.rstrip().endswith("nothing to check")


def test_the_table(gpu_check):
    text = gpu_check.format_table([("a check", "1.0e-07", "< 1e-4", True), ("a speed", "5 px/s", "", None),
                                   ("broken", "RuntimeError: x", "", False)])
    assert text.splitlines() == [
        "what     measured         condition",
        "-----------------------------------",
        "a check  1.0e-07          < 1e-4     pass",
        "a speed  5 px/s",
        "broken   RuntimeError: x             FAIL",
    ]


def test_a_disagreement_between_devices_is_caught(gpu_check, monkeypatch):
    """The device check passes for two identical models and fails, with the difference in the
    row, when the second device's model is off by 1e-3 (a stand-in for a broken device)."""
    import napari_liif.engine as engine

    row, ok = gpu_check.check_devices_agree("default", "cpu", size=(16, 20))
    assert ok and row[1] == "max |diff| 0.0e+00"
    real, calls = engine.load_model, []

    def second_is_off(*a, **kw):
        m = real(*a, **kw)
        calls.append(m)
        if len(calls) == 2:
            with torch.no_grad():
                m.net.imnet.linears[-1].bias += 2e-3  # 1e-3 on the [0, 1] scale
        return m

    monkeypatch.setattr(engine, "load_model", second_is_off)
    row, ok = gpu_check.check_devices_agree("default", "cpu", size=(16, 20))
    assert not ok and row[3] is False and 8e-4 < float(row[1].split()[-1]) <= 1e-3 + 1e-6


def test_tiled_and_bf16_checks_run_on_the_cpu(gpu_check):
    row, ok = gpu_check.check_tiled_equals_untiled("default", "cpu", size=(40, 44), tile=16)
    assert ok, row
    row, ok = gpu_check.check_bf16_ramp("cpu")
    assert ok, row


def test_speeds_are_work_over_time(gpu_check, monkeypatch):
    """Each speed is the work it did divided by the time measured: with the clock replaced by
    one that always measures 0.25 s, the rates are exact functions of the sizes."""
    monkeypatch.setattr(gpu_check, "_timed", lambda fn, device: (fn(), 0.25)[1])
    speeds = gpu_check.engine_speed("default", "cpu", "bf16", size=24)
    assert speeds == [("default: engine bf16, decoder (latents cached)", "9,216 px/s", "24^2 x2", None),
                      ("default: engine bf16, end to end", "9,216 px/s", "24^2 x2", None)]  # 48 * 48 / 0.25
    assert gpu_check.encoder_speed("default", "cpu", "fp32", size=24) == (
        "default: encoder fp32", "2,304 input px/s", "24^2 window", None)  # 24 * 24 / 0.25

    class Clock:  # every reading 0.1 s after the previous one
        t = 0.0

        @classmethod
        def perf_counter(cls):
            cls.t += 0.1
            return cls.t

    monkeypatch.setattr(gpu_check, "time", Clock)
    row = gpu_check.training_speed("cpu", seconds=0.25, batch_size=2, n_samples=32, inp_size=16,
                                   encoder_args={"n_resblocks": 1, "n_feats": 8}, hidden=[8])
    # readings 0.1 (start), 0.2 and 0.3 (two steps), 0.4 (stop), 0.5: 2 steps / 0.4 s
    assert row == ("training, batch 2", "5.00 steps/s", "2 steps in 0.25 s", None)
    # 32-pixel screen tiles on a lattice anchored at world 0; the view centred on (24, 24):
    # zoom 2, 20 x 36 world px, rows 14..34 and columns 6..42 in 16-px tiles: 3 x 3;
    # zoom 2.5, 16 x 28.8 world px, rows 16..32 and columns 9.6..38.4 in 12.8-px tiles: 2 x 3
    view = gpu_check.live_view("default", "cpu", canvas=(40, 72), zoom=2.0, size=48, tile=32, precision="fp32")
    assert [r[:1] + r[2:] for r in view] == [
        ("default: live view 72x40, cold image", "9 tiles, float32", None),
        ("default: live view 72x40, zoom on the encoded image", "6 tiles, float32", None)]
    assert [r[1] for r in view] == ["0.100 s", "0.100 s"]


def test_a_failing_part_becomes_a_failed_row(gpu_check):
    rows = []
    gpu_check._guarded(rows, gpu_check.check_devices_agree, "no-such-model", "cpu")
    assert len(rows) == 1 and rows[0][3] is False and rows[0][0].startswith("check_devices_agree(")
