"""Model files: official LIIF .pth, our safetensors, official key names, and clear errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_liif import models
from napari_liif.checkpoint import (CheckpointError, describe, read_checkpoint, save_official,
                                    save_safetensors)
from napari_liif.cli import main as cli_main
from napari_liif.engine import LiifModel, load_model

from conftest import build_net, liif_spec

pytestmark = pytest.mark.usefixtures("single_thread")

DATA = Path(__file__).parent / "data"
IMAGE = np.random.default_rng(5).random((9, 14, 3)).astype(np.float32)


def render(model) -> np.ndarray:
    return model.encode(IMAGE).render(None, (20, 25))


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# -- official .pth -------------------------------------------------------------------------

def test_official_pth_loads_and_gives_identical_outputs(official_pth):
    path, net, spec = official_pth
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 17 and raw["optimizer"]["sd"]["state"]  # optimizer state is in the file
    model = load_model(path, device="cpu")
    assert model.spec == spec
    assert model.metadata["format"] == "official-pth"
    assert_same_weights(model.net, net)
    ref = LiifModel(copy.deepcopy(net), spec, device="cpu")
    got, want = render(model), render(ref)
    assert np.array_equal(got, want)
    assert want.std() > 0.05  # a real image, not a constant


def test_save_official_round_trip(tmp_path, small_net):
    net, spec = small_net
    opt = torch.optim.Adam(net.parameters())
    path = save_official(tmp_path / "epoch-last.pth", net, spec, optimizer=opt, epoch=3)
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 3 and raw["model"]["name"] == "liif" and raw["model"]["args"] == spec["args"]
    assert_same_weights(load_model(path, device="cpu").net, net)


def test_official_key_names_load_unchanged():
    """EDSR-baseline-LIIF and RDN-LIIF built from the official specs have exactly the keys,
    shapes and order of the official state dicts (tests/data, copied from ../shared)."""
    table = json.loads((DATA / "official_state_dict_keys.json").read_text())
    for name in ("edsr-baseline-liif", "rdn-liif"):
        net = models.make(table[name]["spec"])
        got = [[k, list(v.shape)] for k, v in net.state_dict().items()]
        assert got == table[name]["keys"], name
        # and a state dict with those keys and shapes loads strictly
        sd = {k: torch.zeros(shape) for k, shape in table[name]["keys"]}
        net.load_state_dict(sd, strict=True)


# -- parameter counts (napari-liif info) ---------------------------------------------------
# EDSR-baseline-LIIF: head 3*64*9+64 = 1,792; 16 blocks * 2 convs * (64*64*9+64 = 36,928)
# = 1,181,696; body tail 36,928 -> encoder 1,220,416. Decoder: 580*256+256 = 148,736,
# 3 * (256*256+256) = 197,376, 256*3+3 = 771 -> 346,883. Total 1,567,299.
# RDN-LIIF (config B, G0 = G = 64, 16 blocks x 8 layers): SFENet 1,792 + 36,928; per block
# sum_i (64+64 i)*64*9 + 64 over i = 0..7 -> 1,327,616, LFF 576*64+64 = 36,928 -> 1,364,544,
# x16 = 21,832,704; GFF 1024*64+64 = 65,600 and 36,928 -> encoder 21,973,952; total 22,320,835.
# (the frozen sub_mean/add_mean convolutions are not counted)

def test_describe_parameter_counts():
    table = json.loads((DATA / "official_state_dict_keys.json").read_text())
    for name, count, enc in (("edsr-baseline-liif", 1_567_299, "edsr-baseline"), ("rdn-liif", 22_320_835, "rdn")):
        spec = table[name]["spec"]
        d = describe(spec, models.make(spec))
        assert d["parameters"] == count
        assert d["encoder"] == enc and d["decoder_hidden"] == [256, 256, 256, 256]
        assert (d["local_ensemble"], d["feat_unfold"], d["cell_decode"], d["bilinear_residual"]) == (
            True, True, True, False)
    assert describe(table["edsr-baseline-liif"]["spec"], models.make(table["edsr-baseline-liif"]["spec"]))[
        "receptive_radius"] == 34  # 1 head conv + 16 * 2 + 1 tail conv


def test_cli_info_prints_architecture_and_parameter_count(official_pth, capsys):
    # small_net: EDSR-baseline, 2 blocks, 64 features: 1,792 + 2 * 2 * 36,928 + 36,928 = 186,432;
    # decoder 580 -> 32 -> 32 -> 3: 18,592 + 1,056 + 99 = 19,747; total 206,179
    path, _, _ = official_pth
    assert cli_main(["info", str(path)]) == 0
    out = dict(line.split(None, 1) for line in capsys.readouterr().out.strip().splitlines())
    assert out["parameters"] == "206179"
    assert out["encoder"] == "edsr-baseline"
    assert out["local_ensemble"] == out["feat_unfold"] == out["cell_decode"] == "True"
    assert out["bilinear_residual"] == "False"
    assert out["receptive_radius"] == "6"


def test_cli_info_bad_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "nothing.pth"
    assert cli_main(["info", str(bad)]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad) in err and "no such file" in err


# -- our safetensors -----------------------------------------------------------------------

def test_safetensors_round_trip(own_safetensors):
    path, net, spec = own_safetensors
    model = load_model(path, device="cpu")
    assert model.spec == spec
    assert model.metadata["steps"] == "123" and model.metadata["trained_on"] == "nothing"
    assert_same_weights(model.net, net)
    assert np.array_equal(render(model), render(LiifModel(copy.deepcopy(net), spec, device="cpu")))


def test_safetensors_keeps_the_bilinear_switch(tmp_path):
    spec = liif_spec("edsr-baseline", hidden=(16,), local_ensemble=False, cell_decode=False,
                     bilinear_residual=True)
    net = build_net(spec, seed=2)
    model = load_model(save_safetensors(tmp_path / "m.safetensors", net, spec), device="cpu")
    assert (model.net.local_ensemble, model.net.feat_unfold, model.net.cell_decode,
            model.net.bilinear_residual) == (False, True, False, True)
    assert np.array_equal(render(model), render(LiifModel(copy.deepcopy(net), spec, device="cpu")))


# -- clear errors --------------------------------------------------------------------------

def expect_error(path, *words):
    """load_model(path) raises one line naming the file and containing ``words``."""
    with pytest.raises(CheckpointError) as info:
        load_model(path, device="cpu")
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert msg.startswith(str(path)), msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def test_missing_file(tmp_path):
    expect_error(tmp_path / "absent.pth", "no such file", ".pth", ".safetensors")


def test_directory_is_not_a_file(tmp_path):
    expect_error(tmp_path, "no such file")


def test_truncated_pth(tmp_path, official_pth):
    data = official_pth[0].read_bytes()
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(data[: len(data) // 2])
    expect_error(bad, "not a readable torch checkpoint", "expected an official LIIF .pth")


def test_empty_file(tmp_path):
    bad = tmp_path / "empty.pth"
    bad.write_bytes(b"")
    expect_error(bad, "not a readable torch checkpoint")


def test_random_bytes(tmp_path):
    bad = tmp_path / "noise.pth"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    expect_error(bad, "not a LIIF checkpoint", "expected an official LIIF .pth")


def test_torch_file_that_is_not_liif(tmp_path, small_net):
    bad = tmp_path / "state_dict_only.pth"
    torch.save(small_net[0].state_dict(), bad)  # a bare state dict, a common mistake
    msg = expect_error(bad, "not a LIIF checkpoint", "'model'", "'sd'")
    assert "encoder.body.0.body.0.bias" in msg  # says what it found instead
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    expect_error(tensor, "not a LIIF checkpoint", "found Tensor")
    broken = tmp_path / "sd_is_a_list.pth"
    torch.save({"model": {"name": "liif", "args": {}, "sd": [1, 2]}}, broken)
    expect_error(broken, "not a LIIF checkpoint", "found dict and list")


def test_other_model_name(tmp_path, small_net):
    net, spec = small_net
    bad = tmp_path / "metasr.pth"
    torch.save({"model": {"name": "metasr", "args": spec["args"], "sd": net.state_dict()}}, bad)
    expect_error(bad, "'metasr'", "supported: liif, lmliif")


def test_unknown_encoder(tmp_path, small_net):
    net, spec = small_net
    args = dict(spec["args"], encoder_spec={"name": "swinir", "args": {}})
    bad = tmp_path / "swinir.pth"
    torch.save({"model": {"name": "liif", "args": args, "sd": net.state_dict()}}, bad)
    expect_error(bad, "cannot build", "'swinir'", "edsr-baseline")


def test_wrong_state_dict_shapes(tmp_path, small_net):
    net, _ = small_net  # decoder 32, 32
    other = liif_spec("edsr-baseline", hidden=(16, 16))
    bad = tmp_path / "shapes.pth"
    torch.save({"model": {"name": "liif", "args": other["args"], "sd": net.state_dict()}, "epoch": 1}, bad)
    expect_error(bad, "weights do not match the spec", "size mismatch", "imnet.layers.0.weight")


def test_missing_and_unexpected_keys(tmp_path, small_net):
    net, spec = small_net
    sd = net.state_dict()
    sd["encoder.extra"] = torch.zeros(1)
    del sd["imnet.layers.0.bias"]
    bad = tmp_path / "keys.pth"
    torch.save({"model": {"name": "liif", "args": spec["args"], "sd": sd}}, bad)
    expect_error(bad, "weights do not match the spec", "imnet.layers.0.bias")


class _Payload:
    """Unpickling this object calls open(marker, 'w'): creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "EXECUTED"
    bad = tmp_path / "malicious.pth"
    torch.save({"model": {"name": "liif", "args": {}, "sd": {"x": _Payload(marker)}}}, bad)
    expect_error(bad, "not a LIIF checkpoint", "refused", "nothing in it was run")
    with pytest.raises(CheckpointError):
        read_checkpoint(bad)
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    torch.load(bad, weights_only=False)
    assert marker.exists()


def test_safetensors_without_spec(tmp_path, small_net):
    from safetensors.torch import save_file

    bad = tmp_path / "foreign.safetensors"
    save_file({k: v.contiguous() for k, v in small_net[0].state_dict().items()}, str(bad))
    expect_error(bad, "no 'spec' metadata")
    notjson = tmp_path / "notjson.safetensors"
    save_file({"x": torch.zeros(2)}, str(notjson), metadata={"spec": "{oops"})
    expect_error(notjson, "not valid JSON")
    notspec = tmp_path / "notspec.safetensors"
    save_file({"x": torch.zeros(2)}, str(notspec), metadata={"spec": "[1, 2]"})
    expect_error(notspec, "not a model spec")


def test_truncated_safetensors(tmp_path, own_safetensors):
    data = own_safetensors[0].read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    expect_error(bad, "not a readable safetensors file")


def test_wrong_extension_is_still_a_clear_error(tmp_path, official_pth, own_safetensors):
    pth_named_st = tmp_path / "really-a-pth.safetensors"
    pth_named_st.write_bytes(official_pth[0].read_bytes())
    expect_error(pth_named_st, "not a readable safetensors file")
    st_named_pth = tmp_path / "really-safetensors.pth"
    st_named_pth.write_bytes(own_safetensors[0].read_bytes())
    expect_error(st_named_pth, "not a LIIF checkpoint")


def test_no_bundled_default_is_a_clear_error(tmp_path, monkeypatch):
    from napari_liif import engine

    monkeypatch.setattr(engine, "DEFAULT_WEIGHTS", tmp_path / "none.safetensors")
    with pytest.raises(CheckpointError, match="no bundled default model.*checkpoint=PATH"):
        load_model(None, device="cpu")


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)  # callers catching ValueError see it too
