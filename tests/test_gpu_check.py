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


def test_its_parts_run_on_the_cpu(gpu_check):
    row, ok = gpu_check.check_devices_agree("default", "cpu", size=(16, 20))
    assert ok and row[1] == "max |diff| 0.0e+00"
    row, ok = gpu_check.check_tiled_equals_untiled("default", "cpu", size=(40, 44), tile=16)
    assert ok, row
    row, ok = gpu_check.check_bf16_ramp("cpu")
    assert ok, row
    speeds = gpu_check.engine_speed("default", "cpu", "bf16", size=24)
    assert [r[0] for r in speeds] == ["default: engine bf16, decoder (latents cached)", "default: engine bf16, end to end"]
    assert all(r[1].endswith(" px/s") and float(r[1].split()[0].replace(",", "")) > 0 for r in speeds)
    assert gpu_check.encoder_speed("default", "cpu", "fp32", size=24)[1].endswith("input px/s")
    view = gpu_check.live_view("default", "cpu", canvas=(40, 72), zoom=2.0, size=48, tile=32, precision="fp32")
    assert [r[0] for r in view] == ["default: live view 72x40, cold image", "default: live view 72x40, zoom on the encoded image"]
    assert all(float(r[1].split()[0]) > 0 for r in view) and view[0][2] == "9 tiles, float32"
    row = gpu_check.training_speed("cpu", seconds=0.2, batch_size=2, n_samples=32, inp_size=16,
                                   encoder_args={"n_resblocks": 1, "n_feats": 8}, hidden=[8])
    assert row[0] == "training, batch 2" and float(row[1].split()[0]) > 0


def test_a_failing_part_becomes_a_failed_row(gpu_check):
    rows = []
    gpu_check._guarded(rows, gpu_check.check_devices_agree, "no-such-model", "cpu")
    assert len(rows) == 1 and rows[0][3] is False and rows[0][0].startswith("check_devices_agree(")
