"""Concurrent runs, stale outputs and interruptions (issue 17, items 1, 2 and 7).

* Concurrency: every temporary output is owned (locked) by the process writing it and never
  removed while that process lives; the rename into place is the only commit, and replaces only
  what the run checked; the run that loses a race keeps the winner's result and says so (exit 0,
  identical) or exits 1 with one line.
* No stale results: an output of ours is reused only when it was made from the same input bytes
  and the same parameters; otherwise it is recomputed.
* Interruption: Ctrl-C, SIGTERM, SIGHUP and kill -9 at chosen points, and a full disk, never leave
  anything under a final name; the next run cleans what a dead run left and writes the result a
  clean run writes.

Subprocess tests run the command through ``concurrency_driver.py``, which stops itself (SIGSTOP)
at a chosen point so the interleavings are exact. References are computed in-process with
``upscale`` (no output machinery involved).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from batch_helpers import tiny_checkpoint
from cli_helpers import one_line, run

import napari_liif
from napari_liif.api import upscale
from napari_liif.cli import main
from napari_liif.engine import load_model
from napari_liif.io import read_image, write_image
from napari_liif.outputs import (LOG_NAME, Claim, DiskFullError, OutputError, atomic_file, atomic_store,
                                 remove_stale_in, store_mark, store_state)
from napari_liif.outputs import atomic
from napari_liif.outputs.temporaries import TEMP_NAME, temp_name
from napari_liif.owners import create_owned, take_if_abandoned
from napari_liif.zarr_io import read_zarr, write_zarr

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
DRIVER = TESTS / "concurrency_driver.py"


pytestmark = pytest.mark.usefixtures("single_thread_module")


@pytest.fixture(scope="module")
def ckpt2(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model2") / "other.safetensors", seed=4)


@pytest.fixture
def img(user_file):
    a = np.random.default_rng(5).integers(100, 4000, (32, 32)).astype(np.uint16)
    return user_file("a.tif", a), a


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_sha(path: Path) -> dict:
    return {str(p.relative_to(path)): sha(p) for p in sorted(Path(path).rglob("*")) if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(".") and n != LOG_NAME)


def log_records(folder: Path) -> list[dict]:
    lines = (folder / LOG_NAME).read_text().splitlines()
    assert json.loads(lines[0]) == {"napari_liif_outputs": 1}
    return [json.loads(line) for line in lines[1:]]


# -- subprocesses stopped at chosen points -----------------------------------------------------------
def start(point: str, *argv, ignore: str | None = None) -> subprocess.Popen:
    """The command stopped at ``point`` (concurrency_driver.py), its signals at their defaults
    whatever this test run inherited, or with ``ignore`` (a signal name) ignored as under nohup."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(TESTS)]), OMP_NUM_THREADS="1")
    env.pop("DRIVER_IGNORE", None)
    if ignore:
        env["DRIVER_IGNORE"] = ignore
    return subprocess.Popen([sys.executable, str(DRIVER), point, *map(str, argv)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_stopped(p: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until the process has stopped itself at its point (state T), or fail with its output."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if p.poll() is not None:
            out, err = p.communicate()
            pytest.fail(f"exited {p.returncode} before its stop point: {out!r} {err!r}")
        with open(f"/proc/{p.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.005)
    p.kill()
    pytest.fail("never reached its stop point")


def finish(p: subprocess.Popen, *signals) -> tuple[int, str, str]:
    for s in signals:
        p.send_signal(s)
    if signal.SIGKILL not in signals:
        p.send_signal(signal.SIGCONT)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


def dask_args(src, dst, ckpt, *extra):
    return ["upscale", src, "--scale", "2", "--dask", "--chunk", "16", "-o", dst, "--checkpoint", ckpt, "--quiet",
            *extra]


def file_args(src, dst, ckpt, *extra):
    return ["upscale", src, "--scale", "2", "-o", dst, "--checkpoint", ckpt, "--quiet", *extra]


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists() or os.name != "posix",
                                reason="stop points need /proc and POSIX signals")


# == 1. concurrency ===================================================================================
@needs_proc
@pytest.mark.parametrize("point", ["temp", pytest.param("commit", marks=pytest.mark.slow)])
def test_two_dask_runs_onto_one_store_give_one_readable_correct_store(tmp_path, ckpt, model, img, point):
    """The headline bug: the second run's cleanup deleted the first run's live temporary store,
    and both exited 0 over an unreadable o.zarr."""
    src, a = img
    dst = tmp_path / "o.zarr"
    first = start(point, *dask_args(src, dst, ckpt))
    wait_stopped(first)
    second = start("none", *dask_args(src, dst, ckpt))
    assert finish(second) == (0, f"wrote {dst}\n", "")
    assert len(hidden(tmp_path)) == 1  # the stopped run's temporary survived the second run
    assert finish(first) == (0, f"kept: {dst}: another napari-liif run wrote the identical result meanwhile\n", "")
    assert hidden(tmp_path) == [] and store_state(dst) == "ours"
    assert np.array_equal(read_zarr(dst).compute(), upscale(a, scale=2, model=model))


@needs_proc
def test_a_race_lost_to_other_parameters_exits_1_and_keeps_the_winner(tmp_path, ckpt, model, img):
    src, a = img
    dst = tmp_path / "o.zarr"
    first = start("temp", *dask_args(src, dst, ckpt))
    wait_stopped(first)
    second = start("none", *dask_args(src, dst, ckpt, "--cell", "off"))
    assert finish(second)[0] == 0
    winner = tree_sha(dst)
    rc, out, err = finish(first)
    assert (rc, out) == (1, "")
    assert one_line(err) == (f"napari-liif: error: {src}: {dst}: another napari-liif run wrote it while this one "
                             "worked, from another input or parameters; kept that result: run again to redo this one")
    assert tree_sha(dst) == winner and hidden(tmp_path) == []
    assert np.array_equal(read_zarr(dst).compute(), upscale(a, scale=2, model=model, cell="off"))


@needs_proc
def test_two_file_runs_onto_one_output_keep_one_correct_file(tmp_path, ckpt, model, img):
    src, a = img
    dst = tmp_path / "o.tif"
    first = start("commit", *file_args(src, dst, ckpt))
    wait_stopped(first)
    assert len(hidden(tmp_path)) == 1
    second = start("none", *file_args(src, dst, ckpt))
    assert finish(second) == (0, f"wrote {dst}\n", "")
    written = sha(dst)
    assert finish(first) == (0, f"kept: {dst}: another napari-liif run wrote the identical result meanwhile\n", "")
    assert sha(dst) == written and hidden(tmp_path) == []
    assert np.array_equal(read_image(dst), upscale(a, scale=2, model=model))
    # the log has the winner's record, and a third run reuses it
    assert [r["sha256"] for r in log_records(tmp_path)] == ["sha256:" + written]


@needs_proc
@pytest.mark.slow
def test_kill_9_in_a_store_swap_then_a_rerun_writes_the_clean_result(tmp_path, ckpt, model, img):
    src, a = img
    dst = tmp_path / "o.zarr"
    assert main([str(v) for v in dask_args(src, dst, ckpt, "--cell", "off")]) == 0  # a stale store of ours
    p = start("aside", *dask_args(src, dst, ckpt))
    wait_stopped(p)
    assert not dst.exists() and len(hidden(tmp_path)) == 2  # old store aside, new one not yet in place
    assert finish(p, signal.SIGKILL)[0] == -signal.SIGKILL
    rc, out, err = run_sub("none", *dask_args(src, dst, ckpt))
    assert (rc, out, err) == (0, f"wrote {dst}\n", "")
    assert hidden(tmp_path) == [] and np.array_equal(read_zarr(dst).compute(), upscale(a, scale=2, model=model))


def run_sub(point, *argv):
    return finish(start(point, *argv))


@needs_proc
@pytest.mark.parametrize("kind", ["dask", "file"])
def test_kill_9_with_a_live_temporary_then_a_rerun_cleans_it_and_writes(tmp_path, ckpt, model, img, kind):
    src, a = img
    dst = tmp_path / ("o.zarr" if kind == "dask" else "o.tif")
    args = dask_args(src, dst, ckpt) if kind == "dask" else file_args(src, dst, ckpt)
    p = start("temp", *args)
    wait_stopped(p)
    [temp] = hidden(tmp_path)
    finish(p, signal.SIGKILL)
    assert not dst.exists() and hidden(tmp_path) == [temp]  # left by the dead run
    assert main([str(v) for v in args]) == 0 and hidden(tmp_path) == []
    expect = upscale(a, scale=2, model=model)
    got = read_zarr(dst).compute() if kind == "dask" else read_image(dst)
    assert np.array_equal(got, expect)


@needs_proc
@pytest.mark.parametrize("sig, rc, words", [(signal.SIGINT, 130, "interrupted"),
                                            (signal.SIGTERM, 143, "stopped by SIGTERM"),
                                            pytest.param(signal.SIGHUP, 129, "stopped by SIGHUP",
                                                         marks=pytest.mark.slow)])
def test_a_signal_mid_store_removes_the_temporary(tmp_path, ckpt, img, sig, rc, words):
    src, _ = img
    dst = tmp_path / "o.zarr"
    p = start("chunk", *dask_args(src, dst, ckpt))
    wait_stopped(p)
    assert len(hidden(tmp_path)) == 1
    code, out, err = finish(p, sig)
    assert (code, out) == (rc, "")
    assert one_line(err) == f"napari-liif: {words} (outputs not finished were not written)"
    assert sorted(os.listdir(tmp_path)) == ["user"]


@needs_proc
@pytest.mark.parametrize("sig, rc, words", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "stopped by SIGTERM")])
def test_a_signal_that_lands_in_a_dask_worker_thread_still_stops_the_run(tmp_path, ckpt, img, sig, rc, words):
    """The kernel gives a process's signal to any of its threads; Python runs the handler in the
    main thread, which waits inside dask's compute. Here the worker writing the second chunk
    receives it itself."""
    src, _ = img
    code, out, err = finish(start(f"chunk={sig}", *dask_args(src, tmp_path / "o.zarr", ckpt)))
    assert (code, out) == (rc, "")
    assert one_line(err) == f"napari-liif: {words} (outputs not finished were not written)"
    assert sorted(os.listdir(tmp_path)) == ["user"]


@needs_proc
def test_a_sigint_the_caller_ignores_stays_ignored(tmp_path, ckpt, model, img):
    """A background job of a non-interactive shell (``cmd &`` in a script) starts with SIGINT
    ignored, so that Ctrl-C in the terminal is not for it: napari-liif keeps it ignored and
    finishes (the failure of the signal test when the suite itself ran so)."""
    src, a = img
    dst = tmp_path / "o.zarr"
    p = start("chunk", *dask_args(src, dst, ckpt), ignore="SIGINT")
    wait_stopped(p)
    assert finish(p, signal.SIGINT) == (0, f"wrote {dst}\n", "")
    assert hidden(tmp_path) == [] and np.array_equal(read_zarr(dst).compute(), upscale(a, scale=2, model=model))


@needs_proc
@pytest.mark.slow
def test_a_signal_in_a_store_swap_finishes_the_swap_then_stops_the_run(tmp_path, ckpt, model, img):
    """Once the commit began (the old store moved aside), the swap is finished, the old store
    removed, and the run ends with the signal's status."""
    src, a = img
    dst = tmp_path / "o.zarr"
    assert main([str(v) for v in dask_args(src, dst, ckpt, "--cell", "off")]) == 0  # a stale store of ours
    p = start("aside", *dask_args(src, dst, ckpt))
    wait_stopped(p)
    code, out, err = finish(p, signal.SIGINT)
    assert (code, out, one_line(err)) == (130, "", "napari-liif: interrupted (outputs not finished were not written)")
    assert hidden(tmp_path) == [] and np.array_equal(read_zarr(dst).compute(), upscale(a, scale=2, model=model))


@needs_proc
def test_sigterm_while_a_file_is_written_leaves_nothing(tmp_path, ckpt, img):
    src, _ = img
    p = start("temp", *file_args(src, tmp_path / "out", ckpt))
    wait_stopped(p)
    assert finish(p, signal.SIGTERM)[:2] == (143, "")
    assert os.listdir(tmp_path / "out") == []


# -- the race rules, in one process ------------------------------------------------------------------
def _another_run_writes(dst: Path, data: np.ndarray, made: dict) -> None:
    claim = Claim(made).look(dst)
    write_image(dst, data, overwrite=True, record=claim)
    assert claim.outcome == "written"


def test_a_commit_over_an_identical_result_keeps_it_and_says_identical(tmp_path):
    dst, made = tmp_path / "o.tif", {"input": "sha256:x", "scale": 2}
    data = np.arange(12, dtype=np.uint16).reshape(3, 4)
    claim = Claim(made).look(dst)  # this run checked: nothing there
    _another_run_writes(dst, data, made)
    before = (os.stat(dst).st_ino, sha(dst))
    write_image(dst, data, overwrite=True, record=claim)
    assert claim.outcome == "identical" and (os.stat(dst).st_ino, sha(dst)) == before
    assert os.listdir(tmp_path) == [LOG_NAME, "o.tif"]


def test_same_parameters_but_other_values_is_a_lost_race(tmp_path):
    dst, made = tmp_path / "o.tif", {"input": "sha256:x", "scale": 2}
    claim = Claim(made).look(dst)
    _another_run_writes(dst, np.zeros((3, 4), np.uint16), made)
    with pytest.raises(OutputError, match=r"o\.tif: another napari-liif run wrote it while this one worked, with "
                                          r"other values; kept that result"):
        write_image(dst, np.ones((3, 4), np.uint16), overwrite=True, record=claim)
    assert np.array_equal(read_image(dst), np.zeros((3, 4), np.uint16)) and hidden(tmp_path) == []


def test_a_file_that_appears_while_a_run_works_is_never_replaced(tmp_path):
    dst = tmp_path / "o.tif"
    claim = Claim({"input": "sha256:x"}).look(dst)
    dst.write_bytes(b"the user's file")
    with pytest.raises(OutputError, match=r"o\.tif: appeared while this run worked and was not written by "
                                          r"napari-liif; left it as it is: choose another -o"):
        write_image(dst, np.ones((3, 4), np.uint16), overwrite=True, record=claim)
    assert dst.read_bytes() == b"the user's file" and os.listdir(tmp_path) == ["o.tif"]


def test_an_output_removed_while_a_run_works_is_simply_written(tmp_path):
    dst = tmp_path / "o.tif"
    _another_run_writes(dst, np.zeros((2, 2), np.uint8), {"v": 1})
    claim = Claim({"v": 2}).look(dst)
    dst.unlink()
    write_image(dst, np.ones((2, 2), np.uint8), overwrite=True, record=claim)
    assert claim.outcome == "written" and np.array_equal(read_image(dst), np.ones((2, 2), np.uint8))


def test_store_race_identical_and_different(tmp_path):
    dst, made = tmp_path / "o.zarr", {"input": "sha256:x"}
    a = np.arange(16, dtype=np.uint8).reshape(4, 4)
    mine = Claim(made).look(dst)
    write_zarr(a, dst, made=made)  # another run, first
    winner = tree_sha(dst)
    write_zarr(a, dst, overwrite=True, claim=mine)
    assert mine.outcome == "identical" and tree_sha(dst) == winner
    late = Claim({"input": "sha256:y"}).look(dst)
    write_zarr(a + 1, dst, overwrite=True, made={"input": "sha256:z"})  # a third run with other input
    with pytest.raises(OutputError, match="from another input or parameters; kept that result"):
        write_zarr(a + 2, dst, overwrite=True, claim=late)
    assert np.array_equal(read_zarr(dst).compute(), a + 1) and hidden(tmp_path) == []


def test_eight_threads_writing_one_file_leave_one_correct_file(tmp_path):
    dst, made = tmp_path / "o.npy", {"input": "sha256:x"}
    data = np.arange(64, dtype=np.float32).reshape(8, 8)
    claims = [Claim(made).look(dst) for _ in range(8)]  # all checked before any commit
    errors = []

    def one(c):
        try:
            write_image(dst, data, overwrite=True, record=c)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(c,)) for c in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sorted(c.outcome for c in claims) == ["identical"] * 7 + ["written"]
    assert np.array_equal(np.load(dst), data) and sorted(os.listdir(tmp_path)) == [LOG_NAME, "o.npy"]
    assert len(log_records(tmp_path)) == 1


# -- owners of temporaries -----------------------------------------------------------------------------
def _temp(dst: Path, kind="partial") -> Path:
    return temp_name(dst, kind)


def test_a_live_temporary_is_never_removed_a_dead_ones_is(tmp_path):
    dst = tmp_path / "o.tif"
    live = create_owned(lambda: _temp(dst), lambda p: p.write_bytes(b"live"))
    dead = _temp(dst)
    dead.write_bytes(b"dead run")  # no owner: its process ended
    try:
        assert remove_stale_in(tmp_path, ["o.tif"]) == [dead]
        assert live.path.read_bytes() == b"live" and take_if_abandoned(live.path) is None
    finally:
        live.release()
    assert remove_stale_in(tmp_path, ["o.tif"]) == [live.path] and os.listdir(tmp_path) == []


def test_lookalikes_links_and_other_outputs_temporaries_are_kept(tmp_path, user_file):
    dst = tmp_path / "o.tif"
    bad_check = user_file(".o.tif.partial-0123456789abcdef.tif", b"a user's file")  # the check does not match
    other = _temp(tmp_path / "p.tif")
    other.write_bytes(b"another output's")
    link = _temp(dst)
    link.symlink_to(bad_check)
    store_like = _temp(tmp_path / "o.zarr")
    (store_like / "notes.txt").parent.mkdir()
    (store_like / "notes.txt").write_text("not a store of ours")
    assert remove_stale_in(tmp_path, ["o.tif", "o.zarr"]) == []
    assert remove_stale_in(bad_check.parent, ["o.tif"]) == []
    assert {other.name, link.name, store_like.name} <= set(os.listdir(tmp_path))


def test_the_owner_lock_ends_with_the_process(tmp_path):
    code = ("import sys, os; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
            "from napari_liif.owners import create_owned; "
            "o = create_owned(lambda: Path(sys.argv[2]), lambda p: p.write_bytes(b'x')); "
            "print('locked', flush=True); sys.stdin.read()")
    temp = tmp_path / ".t"
    p = subprocess.Popen([sys.executable, "-c", code, str(SRC), str(temp)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "locked\n"
    assert take_if_abandoned(temp) is None  # alive
    p.kill()
    p.wait()
    owned = take_if_abandoned(temp)  # dead: its lock went with it
    assert owned is not None
    owned.release()


# == 2. no stale results ===================================================================================
def test_a_rerun_with_another_scale_recomputes_our_output(capsys, tmp_path, ckpt, model, img):
    src, a = img
    dst = tmp_path / "o.tif"
    assert run(capsys, "upscale", src, "--scale", "2", "-o", dst, "--checkpoint", ckpt)[:2] == (0, f"wrote {dst}\n")
    assert run(capsys, "upscale", src, "--scale", "3", "-o", dst, "--checkpoint", ckpt)[:2] == (0, f"wrote {dst}\n")
    assert np.array_equal(read_image(dst), upscale(a, scale=3, model=model))
    rc, out, _ = run(capsys, "upscale", src, "--scale", "3", "-o", dst, "--checkpoint", ckpt)
    assert (rc, out) == (0, f"skipped: {dst} exists (use --overwrite)\n")


def test_a_rerun_after_the_input_was_rewritten_recomputes(capsys, tmp_path, ckpt, model):
    src = tmp_path / "a.tif"
    a = np.random.default_rng(1).integers(0, 4000, (32, 32)).astype(np.uint16)
    tifffile.imwrite(src, a)
    dst = tmp_path / "o.tif"
    assert run(capsys, "upscale", src, "--scale", "2", "-o", dst, "--checkpoint", ckpt)[0] == 0
    st = os.stat(src)
    b = a[::-1].copy()  # other data, same size; the time put back as it was
    tifffile.imwrite(src, b)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(src).st_size == st.st_size
    assert run(capsys, "upscale", src, "--scale", "2", "-o", dst, "--checkpoint", ckpt)[:2] == (0, f"wrote {dst}\n")
    assert np.array_equal(read_image(dst), upscale(b, scale=2, model=model))


#: each option of the command, and what it asks of ``upscale`` (the public API)
CHANGES = {"--cell off": {"cell": "off"}, "--limits 0,5000": {"limits": (0, 5000)},
           "--percentiles 1,99": {"percentiles": (1, 99)}, "--preserve-flux": {"preserve_flux": True},
           "--preserve-flux local": {"preserve_flux": "local"}, "--checkpoint other": {}}


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_parameter_change_recomputes(capsys, tmp_path, ckpt, ckpt2, model, img, change):
    src, a = img
    dst = tmp_path / "o.tif"
    base = ["upscale", src, "--scale", "2", "-o", dst]
    assert run(capsys, *base, "--checkpoint", ckpt)[0] == 0
    first = read_image(dst)
    assert np.array_equal(first, upscale(a, scale=2, model=model))
    other = change == "--checkpoint other"
    more = ["--checkpoint", ckpt2] if other else ["--checkpoint", ckpt, *change.split()]
    rc, out, err = run(capsys, *base, *more)
    assert (rc, out, err) == (0, f"wrote {dst}\n", "")
    # the values of a fresh upscale with the new parameters, and not those of the first run
    want = upscale(a, scale=2, model=load_model(ckpt2, device="cpu") if other else model, **CHANGES[change])
    assert np.array_equal(read_image(dst), want) and not np.array_equal(want, first)
    assert run(capsys, *base, *more)[1] == f"skipped: {dst} exists (use --overwrite)\n"
    assert run(capsys, *base, "--checkpoint", ckpt)[1] == f"wrote {dst}\n"
    assert np.array_equal(read_image(dst), first)


def test_a_channel_axis_given_or_not_is_another_output(capsys, tmp_path, ckpt, user_file):
    src = user_file("s.tif", np.random.default_rng(2).integers(0, 999, (2, 16, 16)).astype(np.uint16))
    dst = tmp_path / "o.tif"
    base = ["upscale", src, "--scale", "2", "-o", dst, "--checkpoint", ckpt]
    assert run(capsys, *base)[1] == f"wrote {dst}\n"
    assert run(capsys, *base, "--channel-axis", "0")[1] == f"wrote {dst}\n"
    made = [r["made"]["channel_axis"] for r in log_records(tmp_path)]
    assert made == [None, 0]
    assert run(capsys, *base, "--channel-axis", "0")[1] == f"skipped: {dst} exists (use --overwrite)\n"


def test_the_record_names_the_input_bytes_and_parameters(capsys, tmp_path, ckpt, img):
    src, _ = img
    dst = tmp_path / "o.tif"
    assert run(capsys, "upscale", src, "--scale", "2", "-o", dst, "--checkpoint", ckpt, "--cell", "clamp")[0] == 0
    [rec] = log_records(tmp_path)
    made = rec["made"]
    assert rec["name"] == "o.tif" and rec["sha256"] == "sha256:" + sha(dst) and rec["size"] == dst.stat().st_size
    assert made["input"] == "sha256:" + sha(src)
    assert (made["scale"], made["size"], made["cell"], made["precision"], made["limits"], made["percentiles"],
            made["preserve_flux"], made["channel_axis"]) == (2.0, None, "clamp", "float32", None, None, False, None)
    assert "dask" not in made and made["napari_liif"] == napari_liif.__version__
    assert made["model"].startswith("sha256:") and len(made["model"]) == 71


def test_a_store_records_what_made_it_and_is_recomputed_when_that_changes(capsys, tmp_path, ckpt, model, img):
    src, a = img
    dst = tmp_path / "o.zarr"
    args = dask_args(src, dst, ckpt)
    assert run(capsys, *args)[:2] == (0, f"wrote {dst}\n")
    mark = store_mark(dst)
    assert mark["complete"] is True and mark["made"]["input"] == "sha256:" + sha(src)
    assert (mark["made"]["dask"], mark["made"]["chunk"]) == (True, 16)
    assert run(capsys, *args)[:2] == (0, f"skipped: {dst} is complete (use --overwrite)\n")
    args[args.index("16")] = "8"
    assert run(capsys, *args)[:2] == (0, f"wrote {dst}\n")
    assert store_mark(dst)["made"]["chunk"] == 8
    assert np.array_equal(read_zarr(dst).compute(), upscale(a, scale=2, model=model))


def test_an_output_recorded_without_provenance_is_recomputed(capsys, tmp_path, ckpt, model, img):
    src, a = img
    dst = tmp_path / "o.tif"
    tifffile.imwrite(dst, np.zeros((4, 4), np.uint16))
    st = dst.stat()
    (tmp_path / LOG_NAME).write_text('{"napari_liif_outputs": 1}\n' + json.dumps(
        {"name": "o.tif", "size": st.st_size, "mtime_ns": st.st_mtime_ns}) + "\n")  # an earlier version's record
    assert run(capsys, "upscale", src, "--scale", "2", "-o", dst, "--checkpoint", ckpt)[:2] == (0, f"wrote {dst}\n")
    assert np.array_equal(read_image(dst), upscale(a, scale=2, model=model))


def test_an_output_edited_with_its_size_and_time_kept_is_not_ours(capsys, tmp_path, ckpt, img):
    src, _ = img
    dst = tmp_path / "o.npy"
    assert run(capsys, "upscale", src, "--scale", "2", "-o", dst, "--checkpoint", ckpt)[0] == 0
    st = dst.stat()
    data = np.load(dst)
    data[0, 0] += 1  # the user's edit: same size, time put back
    np.save(dst, data)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    rc, _, err = run(capsys, "upscale", src, "--scale", "2", "-o", dst, "--checkpoint", ckpt)
    assert rc == 2 and "exists and was not written by napari-liif (or was changed since)" in one_line(err)
    assert np.array_equal(np.load(dst), data)


# == 3. a full disk ==========================================================================================
def test_a_full_disk_while_writing_a_tiff_says_so(capsys, tmp_path, ckpt, img, monkeypatch):
    src, _ = img
    dst = tmp_path / "out" / "a.tif"

    def short_write(path, *a, **k):
        Path(path).write_bytes(b"II*\x00 half")
        raise OSError("8192 requested and 4096 written")  # numpy's tofile on a full disk

    monkeypatch.setattr(tifffile, "imwrite", short_write)
    monkeypatch.setattr(os, "statvfs", lambda p: type("S", (), {"f_bavail": 1, "f_frsize": 4096})())
    rc, out, err = run(capsys, "upscale", src, "--scale", "2", "-o", tmp_path / "out", "--checkpoint", ckpt)
    assert (rc, out) == (1, "")
    assert one_line(err) == (f"napari-liif: error: {src}: no space left on device writing {dst}: free space or "
                             "choose another -o")
    assert os.listdir(tmp_path / "out") == []


def test_a_full_disk_while_writing_a_store_says_so(capsys, tmp_path, ckpt, img, monkeypatch):
    from napari_liif import zarr_io

    src, _ = img
    dst = tmp_path / "o.zarr"
    calls = []
    orig = zarr_io._Guarded.__setitem__

    def full(self, key, value):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        orig(self, key, value)

    monkeypatch.setattr(zarr_io._Guarded, "__setitem__", full)
    rc, out, err = run(capsys, *dask_args(src, dst, ckpt))
    assert (rc, out) == (1, "")
    assert one_line(err) == (f"napari-liif: error: {src}: no space left on device writing {dst}: free space or "
                             "choose another -o")
    assert sorted(os.listdir(tmp_path)) == ["user"]


def test_a_full_disk_when_recording_commits_nothing(tmp_path, monkeypatch):
    dst = tmp_path / "o.tif"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "record_file", full)  # as the commit calls it
    with pytest.raises(DiskFullError) as info:
        write_image(dst, np.zeros((2, 2), np.uint8), record=Claim({"v": 1}))
    assert str(info.value) == f"no space left on device writing {dst}: free space or choose another -o"
    assert info.value.errno == errno.ENOSPC and os.listdir(tmp_path) == []


def test_an_interrupted_store_write_stops_its_chunk_writers_before_removing(tmp_path):
    import dask
    import dask.array as da

    def boom(block, block_info=None):
        if block_info[0]["chunk-location"] == (2, 2):
            raise KeyboardInterrupt
        time.sleep(0.01)
        return block

    lazy = da.zeros((64, 64), chunks=8, dtype="u2").map_blocks(boom, dtype="u2")
    with dask.config.set(scheduler="threads", num_workers=4), pytest.raises(KeyboardInterrupt):
        write_zarr(lazy, tmp_path / "o.zarr")
    time.sleep(0.3)  # any chunk write still running would recreate the folder by now
    assert os.listdir(tmp_path) == []


def test_atomic_store_refuses_to_swap_in_an_incomplete_store(tmp_path):
    dst = tmp_path / "o.zarr"
    with pytest.raises(OutputError, match="is not complete; nothing was replaced"):
        with atomic_store(dst) as tmp:
            zarr.open_array(str(tmp), mode="w-", shape=(2, 2), dtype="u1", zarr_format=2)
    assert os.listdir(tmp_path) == []


def test_atomic_file_temporaries_carry_a_valid_check(tmp_path):
    with atomic_file(tmp_path / "o.txt", record=False) as tmp:
        name = tmp.name
        m = TEMP_NAME.match(name)
        assert m and m["check"] == hashlib.sha256(f"{m['head']}/o.txt".encode()).hexdigest()[:8]
        tmp.write_text("x")
    assert os.listdir(tmp_path) == ["o.txt"]
