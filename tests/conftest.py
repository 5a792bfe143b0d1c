"""Shared fixtures: tiny random LIIF models for every encoder, model files on disk, the tiny model
of the command-line tests (``ckpt``, ``model``, ``bmodel``), one torch thread per test or per
module, the docked upscale widget, and the suite-wide guard of test inputs (docs/testing.md lists
where every shared fixture and helper lives).

The models are deliberately small (two residual blocks, narrow decoders) so that the whole
suite stays fast on a two-core CPU; the query procedure they exercise is the full one.

``input_guard`` (autouse) checksums every input a test is handed (``user_file``, files passed to
``input_guard.protect``, the shared ``tests/data`` files and the bundled weights) and fails the
test at teardown if any of them was changed, replaced or deleted: napari-liif never touches a
file it did not create, and the whole suite holds it to that.
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path

import pytest
import torch

from batch_helpers import tiny_checkpoint
from helpers_models import bilinear_model, one_torch_thread

from napari_liif import models
from napari_liif.checkpoint import save_safetensors
from napari_liif.engine import DEFAULT_WEIGHTS, LiifModel, load_model

DATA = Path(__file__).parent / "data"


class InputGuard:
    """Checksums of files handed to a test, verified when it ends."""

    def __init__(self):
        self.files: dict[Path, tuple[str, tuple]] = {}

    @staticmethod
    def _stat(p: Path) -> tuple:
        st = os.lstat(p)
        return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode

    @staticmethod
    def _sha(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    def protect(self, *paths) -> None:
        """Guard files, and every file under folders (zarr stores included), as they are now."""
        for p in map(Path, paths):
            files = [Path(r) / f for r, _, fs in os.walk(p) for f in fs] if p.is_dir() else [p]
            for f in files:
                if f not in self.files:
                    self.files[f] = (self._sha(f), self._stat(f))

    def changed(self) -> list[str]:
        bad = []
        for f, (sha, stat) in sorted(self.files.items()):
            if not os.path.lexists(f):
                bad.append(f"{f} was deleted")
            elif self._stat(f) != stat and (not f.is_file() or self._sha(f) != sha):
                # any write changes ctime; only a changed checksum (or a non-file) counts
                bad.append(f"{f} was modified or replaced")
        return bad


_SHARED = [p for p in [*sorted(DATA.glob("*")), DEFAULT_WEIGHTS] if p.is_file()]


@pytest.fixture(autouse=True)
def input_guard():
    """Fails any test that changed, replaced or deleted one of its inputs (see the module doc)."""
    guard = InputGuard()
    guard.protect(*_SHARED)
    yield guard
    bad = guard.changed()
    if bad:
        pytest.fail("a test input was touched: " + "; ".join(bad[:5]), pytrace=False)


@pytest.fixture
def user_file(tmp_path, input_guard):
    """Factory ``user_file(name, content) -> Path``: a file of the user's under ``tmp_path/user``
    (``content``: bytes, text, or an array written as its suffix says), guarded by ``input_guard``."""
    from napari_liif.io import write_image

    def make(name: str, content) -> Path:
        path = tmp_path / "user" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            write_image(path, content)
        input_guard.protect(path)
        return path

    return make

#: small encoder specs, one per supported encoder (args go straight to the registry)
ENCODER_SPECS = {
    "edsr-baseline": {"name": "edsr-baseline", "args": {"n_resblocks": 2, "no_upsampling": True}},
    "edsr": {"name": "edsr", "args": {"n_resblocks": 2, "n_feats": 32, "no_upsampling": True}},
    # a toy RDN configuration, "T" (3 blocks x 2 layers, growth 8, registered by the fixtures
    # below): same code paths as the official ones, small enough for many tests and with a
    # receptive field smaller than the test images, so that encoder tiles really are tiles
    "rdn": {"name": "rdn", "args": {"RDNconfig": "T", "G0": 16, "no_upsampling": True}},
    # the smallest official RDN configuration: 20 blocks x 6 layers, growth 32 (slow: used once)
    "rdn-A": {"name": "rdn", "args": {"RDNconfig": "A", "G0": 32, "no_upsampling": True}},
}
#: the encoders that every switch combination is tested with
ENCODERS = ("edsr-baseline", "edsr", "rdn")
TINY_RDN = ("T", (3, 2, 8))  # blocks D, conv layers C, growth G


def liif_spec(encoder: str = "edsr-baseline", *, hidden=(64, 64), local_ensemble: bool = True,
              feat_unfold: bool = True, cell_decode: bool = True, bilinear_residual: bool = False,
              encoder_args: dict | None = None) -> dict:
    """An official-style LIIF spec around one of ``ENCODER_SPECS``."""
    enc = copy.deepcopy(ENCODER_SPECS[encoder]) if encoder in ENCODER_SPECS else {"name": encoder, "args": {}}
    enc["args"].update(encoder_args or {})
    args = {
        "encoder_spec": enc,
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": list(hidden)}},
        "local_ensemble": local_ensemble,
        "feat_unfold": feat_unfold,
        "cell_decode": cell_decode,
    }
    if bilinear_residual:
        args["bilinear_residual"] = True
    return {"name": "liif", "args": args}


def build_net(spec: dict, seed: int = 0) -> torch.nn.Module:
    """Random-initialised network of ``spec``; the same seed gives the same weights.

    PyTorch's default initialisation makes the decoder's outputs tiny (std ~0.03), which
    would make a 1e-5 comparison weak; the decoder is re-initialised (He-normal hidden
    layers, a final layer of gain 0.6, small random biases) so that outputs spread over
    roughly [-1, 1] like images do.
    """
    torch.manual_seed(seed)
    net = models.make(spec).eval()
    linears = [m for m in net.imnet.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for i, lin in enumerate(linears):
            fan_in = lin.weight.shape[1]
            gain = 2 ** 0.5 if i < len(linears) - 1 else 0.6
            lin.weight.normal_(0.0, gain / fan_in ** 0.5)
            lin.bias.uniform_(-0.1, 0.1)
    return net


@pytest.fixture
def tiny_rdn(monkeypatch):
    """Register the toy RDN configuration ``TINY_RDN`` for the duration of one test."""
    from napari_liif.models import rdn

    monkeypatch.setitem(rdn._CONFIGS, TINY_RDN[0], TINY_RDN[1])
    return TINY_RDN[0]


@pytest.fixture
def make_liif(tiny_rdn):
    """Factory ``make_liif(encoder, seed=0, **liif_spec_kwargs) -> (net, spec)`` for the
    encoders of ``ENCODER_SPECS``."""

    def factory(encoder: str = "edsr-baseline", seed: int = 0, **kw):
        spec = liif_spec(encoder, **kw)
        return build_net(spec, seed), spec

    return factory


@pytest.fixture
def as_model():
    """``as_model(net, spec, precision='fp32') -> LiifModel`` on the CPU, on a copy of ``net``
    (``LiifModel`` casts the network it is given in place)."""

    def wrap(net, spec, precision="fp32", **kw):
        return LiifModel(copy.deepcopy(net), spec, device="cpu", precision=precision, **kw)

    return wrap


@pytest.fixture
def single_thread():
    """Run a test with one intra-op torch thread, restoring the setting afterwards. The
    engine tests run thousands of tiny operations (tile encodes, small decodes): thread
    hand-offs cost more than they save, and on a loaded two-core machine they made these
    tests several times slower. Opt in per module with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def single_thread_module():
    """``single_thread`` set once for a whole module, so that its module-scoped models are built
    on one thread too: ``pytestmark = pytest.mark.usefixtures("single_thread_module")``."""
    with one_torch_thread():
        yield


# -- the tiny model of the command-line tests (``batch_helpers``), one per module ---------------
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """``batch_helpers.tiny_checkpoint(seed=3)`` as a safetensors file. Modules that need another
    model override it (``test_cli``, the batch widget tests)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", seed=3)


@pytest.fixture(scope="module")
def model(ckpt):
    """The model of ``ckpt``, as the command loads it (on the CPU)."""
    return load_model(ckpt, device="cpu")


@pytest.fixture(scope="module")
def bmodel():
    """``helpers_models.bilinear_model()``: renders exactly the bilinear interpolation of its input."""
    return bilinear_model()


@pytest.fixture
def small_net():
    """A small EDSR-baseline LIIF (all switches on) and its spec."""
    spec = liif_spec("edsr-baseline", hidden=(32, 32))
    return build_net(spec, seed=7), spec


@pytest.fixture
def official_pth(tmp_path, small_net):
    """``small_net`` written exactly as the official training code writes a checkpoint:
    ``torch.save({'model': {'name', 'args', 'sd'}, 'optimizer': {...}, 'epoch': ...})``,
    optimizer state included. Returns ``(path, net, spec)``."""
    net, spec = small_net
    # one step on a copy so that the optimizer state holds tensors (exp_avg, exp_avg_sq, step)
    train_net = copy.deepcopy(net).train()
    opt = torch.optim.Adam([p for p in train_net.parameters() if p.requires_grad], lr=1e-4)
    inp = torch.rand(1, 3, 6, 6) * 2 - 1
    out = train_net(inp, torch.zeros(1, 4, 2), torch.full((1, 4, 2), 2 / 6))
    out.abs().mean().backward()
    opt.step()
    obj = {
        "model": {"name": spec["name"], "args": spec["args"], "sd": net.state_dict()},
        "optimizer": {"name": "adam", "args": {"lr": 1e-4}, "sd": opt.state_dict()},
        "epoch": 17,
    }
    path = tmp_path / "official-edsr-baseline-liif.pth"
    torch.save(obj, path)
    return path, net, spec


@pytest.fixture
def own_safetensors(tmp_path, small_net):
    """``small_net`` in napari-liif's safetensors format. Returns ``(path, net, spec)``."""
    net, spec = small_net
    path = save_safetensors(tmp_path / "model.safetensors", net, spec, steps="123", trained_on="nothing")
    return path, net, spec


@pytest.fixture
def upscale_widget(make_napari_viewer):
    """Factory ``upscale_widget(checkpoint) -> UpscaleWidget``: the "LIIF upscale" dock widget in a
    new viewer (docked: Qt owns it and closes it with the viewer), set to ``checkpoint`` (as
    ``ModelOptions.set_checkpoint`` takes it) on the CPU. Its viewer is ``widget.viewer``."""

    def make(checkpoint):
        from napari_liif._qt.batch_widget import UpscaleWidget

        viewer = make_napari_viewer()
        w = UpscaleWidget(viewer)
        viewer.window.add_dock_widget(w, name="LIIF upscale")
        w.options.set_checkpoint(checkpoint)
        w.options.device.value = "cpu"
        return w

    return make
