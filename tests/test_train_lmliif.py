"""Training the LM-LIIF family: encoder initialisation, the frozen-encoder phase and
distillation from a teacher are wired as they say (exact equalities, not just 'it runs')."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import build_net, liif_spec
from lmliif_helpers import build_lmliif
from napari_liif.checkpoint import build, read_checkpoint, save_safetensors
from napari_liif.train.loop import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        np.save(d / f"im{k}.npy", rng.random((40, 44, 3)).astype(np.float32))
    return d


def config(image_dir, tmp_path, **kw) -> TrainConfig:
    base = dict(train_dirs=[str(image_dir)], out_dir=str(tmp_path / "run"), steps=2, batch_size=2, inp_size=12,
                scale_max=2.0, n_samples=64, encoder="edsr-baseline", encoder_args={"n_resblocks": 2, "n_feats": 8},
                family="lmliif", lm_hidden_dim=8, lm_hidden_depth=2, lm_hypernet_hidden=[16], val_every=0,
                save_every=0, device="cpu", bilinear_residual=True)
    base.update(kw)
    return TrainConfig(**base)


def encoder_state(net):
    return {k: v.detach().clone() for k, v in net.encoder.state_dict().items()}


def liif_teacher(tmp_path):
    spec = liif_spec("edsr-baseline", hidden=(16,), encoder_args={"n_feats": 8}, bilinear_residual=True)
    net = build_net(spec, seed=3)
    return save_safetensors(tmp_path / "teacher.safetensors", net, spec), net


def test_spec_is_an_official_style_lmliif(image_dir, tmp_path):
    spec = config(image_dir, tmp_path).spec()
    assert spec["name"] == "lmliif"
    a = spec["args"]
    assert a["imnet_spec"] == {"name": "lmmlp", "args": {"out_dim": 3, "hidden_dim": 8, "hidden_depth": 2,
                                                         "mod_scale": True, "mod_shift": True}}
    assert a["hypernet_spec"]["args"] == {"out_dim": 2 * 8 * 2 + 8, "hidden_list": [16]}
    assert a["mod_input"] is True and a["bilinear_residual"] is True


def test_encoder_init_then_frozen_phase_then_joint_training(image_dir, tmp_path):
    teacher_path, teacher = liif_teacher(tmp_path)
    t = Trainer(config(image_dir, tmp_path, init_encoder=str(teacher_path), freeze_encoder_steps=2, lr=1e-2),
                log=lambda *_: None)
    start = encoder_state(t.net)
    assert all(torch.equal(start[k], v) for k, v in teacher.encoder.state_dict().items())
    hyper0 = copy.deepcopy(t.net.hypernet.state_dict())
    t.train_step(), t.train_step()
    assert all(torch.equal(start[k], v) for k, v in t.net.encoder.state_dict().items())  # frozen
    assert any(not torch.equal(hyper0[k], v) for k, v in t.net.hypernet.state_dict().items())  # learning
    t.train_step()
    moved = max(float((start[k] - v).abs().max()) for k, v in t.net.encoder.state_dict().items())
    assert moved > 1e-4  # the encoder trains once the phase is over


def test_teacher_equal_to_the_student_gives_zero_distillation_loss(image_dir, tmp_path):
    """With teacher_weight 1 the loss is the L1 distance to the teacher's output: a teacher
    that is the student itself gives exactly 0, a different one does not."""
    cfg = config(image_dir, tmp_path)
    student = build_lmliif(cfg.spec(), seed=4)
    same = save_safetensors(tmp_path / "same.safetensors", student, cfg.spec())
    t = Trainer(config(image_dir, tmp_path, teacher=str(same), teacher_weight=1.0, lr=0.0), log=lambda *_: None)
    t.net.load_state_dict(student.state_dict())
    assert t.train_step() < 1e-6
    other_path, _ = liif_teacher(tmp_path)
    t2 = Trainer(config(image_dir, tmp_path, out_dir=str(tmp_path / "run2"), teacher=str(other_path),
                        teacher_weight=1.0, lr=0.0), log=lambda *_: None)
    t2.net.load_state_dict(student.state_dict())
    assert t2.train_step() > 1e-3


def test_saved_run_is_an_lmliif_checkpoint(image_dir, tmp_path):
    t = Trainer(config(image_dir, tmp_path), log=lambda *_: None)
    t.run(progress=False)
    for name in ("last.pth", "last.safetensors"):
        spec, sd, _ = read_checkpoint(t.out / name)
        net = build(spec, sd, t.out / name)
        assert spec["name"] == "lmliif" and type(net).__name__ == "LMLIIF"
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), t.net.state_dict().values()))


def test_encoder_of_another_shape_is_refused_in_one_line(image_dir, tmp_path):
    spec = liif_spec("edsr-baseline", hidden=(16,))  # 64 features: not the student's 8
    path = save_safetensors(tmp_path / "wide.safetensors", build_net(spec), spec)
    with pytest.raises(ValueError) as err:
        Trainer(config(image_dir, tmp_path, init_encoder=str(path)), log=lambda *_: None)
    assert "wide.safetensors" in str(err.value) and "\n" not in str(err.value)
