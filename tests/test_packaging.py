"""Packaging: the npe2 manifest validates (and a broken one does not), the widgets open from the
Plugins menu, and a wheel built from a clean clone installs into a fresh virtual environment
and runs ``napari-liif upscale``; the metadata (licence, classifiers, URLs) and napari hub files.

The wheel test reuses this environment's packages (torch, napari, ...) through a ``.pth`` file
in the fresh environment, so it needs no download and takes seconds; the wheel itself is
installed with ``--no-deps --no-index`` and every requirement it declares is checked against
what is installed. ``test_wheel_installs_with_its_dependencies`` (marked ``network``: it downloads from
PyPI for minutes, so neither CI nor a plain ``pytest`` runs it; ``pytest -m network`` does) resolves them for real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from pathlib import Path

import numpy as np
import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "src" / "napari_liif" / "napari.yaml"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
BAD_PYSIDE = "6.12.0"


def _run(cmd, *, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


# -- the npe2 manifest ---------------------------------------------------------------------------

def test_manifest_validates_with_npe2_and_every_python_name_imports():
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(MANIFEST)
    pm.validate_imports()  # what `npe2 validate --imports` does
    installed = PluginManifest.from_distribution("napari-liif")  # found through the entry point
    assert installed.name == pm.name == "napari-liif" and installed.display_name == "napari LIIF"
    assert [w.display_name for w in pm.contributions.widgets] == ["LIIF zoom", "LIIF upscale"]
    assert {s.key for s in pm.contributions.sample_data} == {"photo", "cells"}
    out = _run([sys.executable, "-m", "npe2", "validate", "napari-liif", "--imports"], timeout=300)
    assert "Manifest for 'napari LIIF' valid!" in out.stdout


def test_a_broken_manifest_is_refused(tmp_path):
    from npe2 import PluginManifest
    from pydantic import ValidationError

    data = yaml.safe_load(MANIFEST.read_text())
    data["contributions"]["commands"][0]["python_name"] = "napari_liif._qt.widgets:NoSuchWidget"
    bad_import = tmp_path / "bad_import.yaml"
    bad_import.write_text(yaml.safe_dump(data))
    with pytest.raises(ValidationError, match="NoSuchWidget"):
        PluginManifest.from_file(bad_import).validate_imports()
    data = yaml.safe_load(MANIFEST.read_text())
    data["contributions"]["commands"][0]["id"] = "other-plugin.live_zoom_widget"  # not under our name
    bad_id = tmp_path / "bad_id.yaml"
    bad_id.write_text(yaml.safe_dump(data))
    with pytest.raises(ValidationError, match="other-plugin.live_zoom_widget"):
        PluginManifest.from_file(bad_id)


@pytest.mark.gui
def test_widgets_open_from_the_plugins_menu(make_napari_viewer):
    from napari_liif._qt.batch_widget import UpscaleWidget
    from napari_liif._qt.widgets import LiveZoomWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8), np.uint8), name="img")
    for title, cls in (("LIIF zoom", LiveZoomWidget), ("LIIF upscale", UpscaleWidget)):
        _, widget = viewer.window.add_plugin_dock_widget("napari-liif", title)
        assert type(widget) is cls
        assert [ly.name for ly in widget.source.choices] == ["img"]


# -- metadata ------------------------------------------------------------------------------------

def test_declared_licence_matches_the_license_file():
    text = (ROOT / "LICENSE").read_text()
    assert PROJECT["license"] == "BSD-3-Clause" and PROJECT["license-files"] == ["LICENSE"]
    assert text.startswith("BSD 3-Clause License")
    assert "Neither the name of the copyright holder nor the names of its" in text
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])  # PEP 639: the expression only


def test_the_crashing_pyside6_is_excluded_on_every_install_path():
    extras = PROJECT["optional-dependencies"]
    qt = [r for reqs in extras.values() for r in reqs if r.lower().startswith("pyside6")]
    assert qt and all(f"!={BAD_PYSIDE}" in r for r in qt), qt
    constraints = (ROOT / "scripts" / "constraints.txt").read_text().splitlines()
    assert f"PySide6-Essentials!={BAD_PYSIDE}" in constraints
    install = (ROOT / "scripts" / "install.sh").read_text()
    pip_lines = [ln for ln in install.splitlines() if "pip install" in ln and not ln.lstrip().startswith("#")]
    assert pip_lines and all("-c scripts/constraints.txt" in ln for ln in pip_lines), pip_lines
    assert "PIP_CONSTRAINT" in (ROOT / "tox.ini").read_text()


def test_napari_hub_metadata_agrees_with_the_project():
    hub = ROOT / ".napari-hub"
    config = yaml.safe_load((hub / "config.yml").read_text())
    assert config["project_urls"] == {k: v for k, v in PROJECT["urls"].items() if k != "Homepage"}
    assert config["visibility"] == "public"
    description = (hub / "DESCRIPTION.md").read_text()
    for section in ("## Summary", "## Intended Audience & Supported Data", "## Quick Start"):
        assert section in description
    for image in (ROOT / "docs").glob("images/*.png"):
        if f"docs/images/{image.name}" in description:
            assert image.stat().st_size > 10_000, image


# -- a wheel from a clean clone ------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    """A wheel built from a fresh ``git clone`` of the committed tree, and the build's output."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no clean clone to build from")
    work = tmp_path_factory.mktemp("wheel")
    _run(["git", "clone", "-q", ROOT, work / "clone"], timeout=300)
    out = _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", work / "dist",
                work / "clone"], timeout=600)
    (whl,) = (work / "dist").glob("napari_liif-*.whl")
    return whl, out.stdout + out.stderr


def test_wheel_metadata_and_contents(wheel):
    whl, log = wheel
    # a licence expression, no table: setuptools has nothing deprecated to say
    assert "deprecat" not in log.lower(), [ln for ln in log.splitlines() if "eprecat" in ln]
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        meta = Parser().parsestr(z.read(f"napari_liif-{PROJECT['version']}.dist-info/METADATA").decode())
        entry_points = z.read(f"napari_liif-{PROJECT['version']}.dist-info/entry_points.txt").decode()
    assert {"napari_liif/napari.yaml", "napari_liif/weights/liif-edsr-baseline-default.safetensors",
            f"napari_liif-{PROJECT['version']}.dist-info/licenses/LICENSE"} <= names
    assert not any(n.startswith(("tests/", "docs/", "benchmarks/")) for n in names)
    assert meta["License-Expression"] == "BSD-3-Clause" and meta["License-File"] == "LICENSE"
    assert "Framework :: napari" in meta.get_all("Classifier")
    assert "Operating System :: OS Independent" in meta.get_all("Classifier")
    assert "Programming Language :: Python :: 3.11" in meta.get_all("Classifier")
    assert "napari-plugin" in meta["Keywords"].split(",")
    assert {u.split(",")[0] for u in meta.get_all("Project-URL")} == set(PROJECT["urls"])
    assert meta["Author"] == "napari-liif developers"
    assert "napari-liif = napari_liif:napari.yaml" in entry_points
    assert "napari-liif = napari_liif.cli:main" in entry_points


def _fresh_venv(path: Path) -> Path:
    """A new virtual environment (with its own pip, from the standard library's bundled wheel)."""
    _run([sys.executable, "-m", "venv", path], timeout=300)
    return path / "bin" / "python"


def _see_this_env(python: Path) -> None:
    """Let ``python`` also find this environment's packages (torch, napari, ...), after its own.

    A path line in a ``.pth`` file adds the folder to ``sys.path`` without running the ``.pth``
    files in it, so this checkout's editable install of napari-liif stays invisible there.
    """
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (site / "zz_this_env.pth").write_text(sysconfig.get_path("purelib") + "\n")


def _upscale_in(python: Path, tmp_path: Path) -> None:
    """Run the installed ``napari-liif upscale`` and compare with this process's result."""
    from napari_liif import upscale
    from napari_liif.io import read_image, write_image

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}  # (a PYTHONPATH to src/ too)
    where = _run([python, "-c", "import napari_liif; print(napari_liif.__file__)"], env=env).stdout.strip()
    assert Path(where).is_relative_to(python.parents[1]), where  # the wheel's copy, not this checkout's
    img = (np.random.default_rng(0).random((12, 16, 3)) * 255).astype(np.uint8)
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    write_image(src, img)
    _run([python.parent / "napari-liif", "upscale", src, "--scale", "2", "-o", dst, "--device", "cpu"],
         env=env, timeout=600)
    out = read_image(dst)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    assert np.array_equal(out, upscale(img, scale=2))  # the wheel's bundled model is this checkout's


def test_wheel_installs_into_a_fresh_venv_and_upscales(wheel, tmp_path):
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    whl, _ = wheel
    python = _fresh_venv(tmp_path / "venv")
    # installed before the environment sees this one: pip must not find (nor touch) this checkout's install
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", whl], timeout=300)
    _see_this_env(python)
    # every requirement the wheel declares is installed, in a version it accepts (pip check, for us)
    with zipfile.ZipFile(whl) as z:
        meta = Parser().parsestr(z.read(f"napari_liif-{PROJECT['version']}.dist-info/METADATA").decode())
    unmet = []
    for line in meta.get_all("Requires-Dist"):
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra's requirement
        try:
            version = distribution(req.name).version
        except PackageNotFoundError:
            unmet.append(f"{req} (missing)")
            continue
        if not req.specifier.contains(version, prereleases=True):
            unmet.append(f"{req} (found {version})")
    assert unmet == []
    _upscale_in(python, tmp_path)
    out = _run([python, "-m", "npe2", "validate", "napari-liif", "--imports"], timeout=300)
    assert "valid!" in out.stdout


@pytest.mark.slow
@pytest.mark.network  # deselected by default (pyproject addopts): run before a release with -m network
def test_wheel_installs_with_its_dependencies(wheel, tmp_path):
    """pip resolves the wheel's dependencies in an environment of its own (torch 2.13.0 first: it
    is on local disk; an unpinned torch would be a multi-gigabyte CUDA build), then ``pip check``."""
    whl, _ = wheel
    python = _fresh_venv(tmp_path / "venv")
    pip = [python, "-m", "pip", "install", "-q", "--no-compile", "-c", ROOT / "scripts" / "constraints.txt"]
    _run([*pip, "torch==2.13.0"], timeout=600)
    _run([*pip, whl], timeout=900)
    _run([python, "-m", "pip", "check"], timeout=300)
    _upscale_in(python, tmp_path)
