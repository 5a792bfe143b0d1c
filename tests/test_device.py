"""Device and precision choice, and what reduced precision costs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_liif import device as dev
from napari_liif.device import resolve_device, resolve_precision

pytestmark = pytest.mark.usefixtures("single_thread")

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


@pytest.fixture
def only_cpu(monkeypatch):
    """Pretend the machine has neither CUDA nor MPS."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("cuda,mps,expected", [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"),
                                               (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert dev.available_devices() == [d for d, on in (("cuda", cuda), ("mps", mps), ("cpu", True)) if on]
    for choice in ("auto", None):
        assert resolve_device(choice) == torch.device(expected)
    assert resolve_device() == torch.device(expected)


def test_explicit_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "mps"])
def test_unavailable_device_lists_the_available_ones(only_cpu, name):
    with pytest.raises(ValueError) as info:
        resolve_device(name)
    msg = str(info.value)
    assert repr(name) in msg and "not available" in msg and msg.endswith("available: auto, cpu")


@pytest.mark.parametrize("name", ["gpu", "tpu", "cuda0", "cpu0"])
def test_unknown_device_names(name):
    with pytest.raises(ValueError, match=rf"device '{name}' is not one of auto, cpu, cuda, mps"):
        resolve_device(name)


def test_precision_parsing():
    assert resolve_precision("fp32") is torch.float32
    assert resolve_precision("BF16") is torch.bfloat16
    assert resolve_precision("fp16") is torch.float16
    assert resolve_precision(torch.bfloat16) is torch.bfloat16
    assert resolve_precision() is torch.float32


@pytest.mark.parametrize("bad", ["fp64", "float32", "int8", "", torch.float64, torch.int8])
def test_bad_precision_lists_the_choices(bad):
    with pytest.raises(ValueError, match="is not one of (auto, )?fp32, bf16, fp16"):
        resolve_precision(bad)


def test_auto_precision_follows_the_measured_bf16_speed(monkeypatch):
    """``auto`` is bf16 on a CPU that cannot say whether it has bf16 instructions only where bf16
    matrix products measured >= 1.5x faster."""
    from napari_liif import device as dev

    monkeypatch.setattr(dev, "cpu_bf16_native", lambda: None)
    monkeypatch.setattr(dev, "cpu_bf16_speedup", lambda: 2.0)
    assert resolve_precision("auto", "cpu") is torch.bfloat16
    monkeypatch.setattr(dev, "cpu_bf16_speedup", lambda: 1.2)
    assert resolve_precision("auto", "cpu") is torch.float32
    assert dev.auto_precision(torch.device("mps")) is torch.float32


def test_auto_precision_trusts_the_cpus_bf16_flags_over_a_noisy_timing(monkeypatch):
    """With avx512_bf16 a loaded machine once measured 1.2x (six fresh processes: 1.94, 3.33, 1.98,
    2.9, 1.2, 1.93): the flags decide, the timing only rules out a build that runs bf16 slower."""
    from napari_liif import device as dev

    monkeypatch.setattr(dev, "cpu_bf16_native", lambda: True)
    monkeypatch.setattr(dev, "cpu_bf16_speedup", lambda: 1.2)
    assert dev.auto_precision(torch.device("cpu")) is torch.bfloat16
    monkeypatch.setattr(dev, "cpu_bf16_speedup", lambda: 0.0)  # no bf16 kernels in this build
    assert dev.auto_precision(torch.device("cpu")) is torch.float32
    monkeypatch.setattr(dev, "cpu_bf16_native", lambda: False)
    monkeypatch.setattr(dev, "cpu_bf16_speedup", lambda: 3.0)
    assert dev.auto_precision(torch.device("cpu")) is torch.float32


def test_bf16_flags_are_read_from_x86_cpuinfo_only():
    from napari_liif.device import cpu_bf16_native

    epyc = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\nbugs\t\t: sysret_ss_attrs\n"
    assert cpu_bf16_native(epyc) is True
    assert cpu_bf16_native(epyc.replace("avx512_bf16", "avx512bw")) is False  # AVX-512 without bf16
    assert cpu_bf16_native("flags\t\t: fpu sse2 amx_bf16 amx_tile\n") is True
    assert cpu_bf16_native("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n") is None  # aarch64: timing decides
    assert cpu_bf16_native("") is None


def test_auto_precision_on_cuda_is_bf16_else_fp16(monkeypatch):
    """CUDA: bf16 where the GPU has it (fast tensor cores; input and residual stay fp32), fp16 on
    older GPUs; no GPU is needed to check the choice."""
    from napari_liif import device as dev

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert dev.auto_precision(torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert dev.auto_precision(torch.device("cuda")) is torch.float16
    assert dev.precision_name(torch.bfloat16) == "bf16" and dev.precision_name(torch.float32) == "fp32"


def test_exact_fp32_switches_tf32_only_while_a_cuda_fp32_call_runs():
    """Counted: nested or concurrent calls keep TF32 off until the last one ends, then the
    previous flags come back exactly; CPU and non-fp32 calls touch nothing."""
    from napari_liif.device import exact_fp32

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
        cuda = torch.device("cuda")
        with exact_fp32(torch.device("cpu"), torch.float32), exact_fp32(cuda, torch.bfloat16):
            assert torch.backends.cudnn.allow_tf32 is True
        with exact_fp32(cuda, torch.float32):
            assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
            with exact_fp32(cuda, torch.float32):
                pass
            assert torch.backends.cudnn.allow_tf32 is False  # the inner call did not restore early
        assert torch.backends.cudnn.allow_tf32 is True and torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_bf16_speedup_is_fp32_time_over_bf16_time(monkeypatch):
    """With a clock that charges 4 units per fp32 product and 1 per bf16 one, the speed-up is 4:
    best of five timed products of each dtype after one warm-up, measured once, then cached."""
    calls = {torch.float32: 0, torch.bfloat16: 0}
    clock = [0.0]
    real_linear = torch.nn.functional.linear

    def linear(x, w, *a):
        calls[x.dtype] += 1
        clock[0] += 4.0 if x.dtype is torch.float32 else 1.0
        return real_linear(x, w, *a)

    class Time:
        @staticmethod
        def perf_counter():
            return clock[0]

    monkeypatch.setattr(torch.nn.functional, "linear", linear)
    monkeypatch.setattr(dev, "time", Time)
    dev.cpu_bf16_speedup.cache_clear()
    try:
        assert dev.cpu_bf16_speedup() == 4.0 and dev.cpu_bf16_speedup() == 4.0
        assert calls == {torch.float32: 6, torch.bfloat16: 6}  # the second call was cached

        def no_bf16(x, w, *a):
            if x.dtype is torch.bfloat16:
                raise RuntimeError("no bf16 kernel")
            return real_linear(x, w, *a)

        monkeypatch.setattr(torch.nn.functional, "linear", no_bf16)
        dev.cpu_bf16_speedup.cache_clear()
        assert dev.cpu_bf16_speedup() == 0.0  # a build without bf16 kernels: auto never picks bf16
    finally:
        dev.cpu_bf16_speedup.cache_clear()


def test_model_takes_the_resolved_device_and_dtype(make_liif, as_model):
    net, spec = make_liif("edsr-baseline", hidden=(16,))
    m = as_model(net, spec, precision="bf16")
    assert m.device == torch.device("cpu") and m.dtype is torch.bfloat16
    assert {p.dtype for p in m.net.parameters()} == {torch.bfloat16}
    assert next(net.parameters()).dtype is torch.float32  # the caller's network is untouched (copy)
    assert m.info()["precision"] == "bfloat16" and m.info()["device"] == "cpu"


# -- reduced precision against fp32 ---------------------------------------------------------
# Measured on random EDSR-baseline LIIFs (48 x 48 photo, x2.3), on the [0, 1] output scale:
#   bf16: max |diff| 0.004-0.006, mean 0.0004-0.0007 (2 blocks + 2 x 64 decoder up to
#         16 blocks + official 4 x 256 decoder); fp16: max 0.0005-0.0008, mean ~0.0001.
# Tolerances below leave a ~3x margin. Trained weights may behave differently.

IMAGE = np.random.default_rng(3).random((24, 20, 3)).astype(np.float32)


@pytest.mark.parametrize("precision,max_tol,mean_tol", [("bf16", 0.02, 0.002), ("fp16", 0.003, 3e-4)])
def test_reduced_precision_is_close_to_fp32(make_liif, as_model, precision, max_tol, mean_tol):
    net, spec = make_liif("edsr-baseline")
    ref = as_model(net, spec).encode(IMAGE).render(None, (55, 46))
    got = as_model(net, spec, precision=precision).encode(IMAGE).render(None, (55, 46))
    assert got.dtype == np.float32
    diff = np.abs(got - ref)
    assert diff.max() < max_tol and diff.mean() < mean_tol
    assert diff.max() > 0  # it really ran at reduced precision
    assert ref.std() > 0.05


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_fp32_equals_cpu(make_liif):
    """On a GPU, fp32 must stay fp32: equal to the CPU result within the exactness tolerance
    (fails if TF32 convolutions or matrix products are in effect)."""
    from napari_liif.engine import LiifModel
    import copy

    net, spec = make_liif("edsr-baseline", hidden=(256, 256, 256, 256))
    cpu = LiifModel(copy.deepcopy(net), spec, device="cpu").encode(IMAGE).render(None, (55, 46))
    gpu = LiifModel(copy.deepcopy(net), spec, device="cuda").encode(IMAGE).render(None, (55, 46))
    assert float(np.abs(gpu - cpu).max()) * 2 < 1e-5
