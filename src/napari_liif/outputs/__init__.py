"""Where napari-liif may write, and how: the one place that decides whether a destination is safe.

Rules (every writer follows them: files and folders, ``--dask`` zarr stores, the batch widget,
``napari-liif sample``, training run folders):

* **Inputs are untouchable.** A destination that is an input, resolves to one (symlinks, ``..``),
  is another name for one (a hard link: same ``(st_dev, st_ino)``), holds one (a folder or store
  with an input inside, at any depth) or lies inside an input store is refused, even with
  ``overwrite``.
* **Only our own outputs are replaced or skipped.** A file we wrote is recorded in the hidden log
  ``.napari-liif-outputs`` of its folder (name, size, modification time, SHA-256, and ``made``:
  what made it, :mod:`napari_liif.provenance`); a zarr store we wrote carries the attribute
  ``napari_liif`` (``complete``, ``made``) and holds nothing but zarr files. An output of ours
  is skipped only when its ``made`` equals the run's (same input bytes, same parameters), else
  recomputed. An existing destination that is neither is refused unless ``overwrite``; a folder
  that holds anything other than a zarr store is refused even then (``overwrite`` replaces
  files and zarr stores, never other folders).
* **Atomic, owned writes.** A file is written under a hidden temporary name in its own folder and
  renamed into place (``os.replace``); a store is written as a hidden temporary store and swapped
  in once complete. Each temporary is owned (locked) by its writer (:mod:`napari_liif.owners`)
  and removed only by it, or by a later run once the owner is gone. The rename is the only
  commit and replaces only what the run checked (:class:`Claim`): a run that lost a race to
  another keeps the other's result (``identical``, or an :class:`OutputError`). An interrupted
  run leaves nothing under a final name, and replacing never writes into the old file (another
  hard link to it keeps its bytes). A full disk is a :class:`DiskFullError`.

Every refusal is an :class:`OutputError` whose one-line message starts with the path.

Modules, each with one responsibility (import the names from ``napari_liif.outputs``):

* :mod:`.errors`: :class:`OutputError`, :class:`DiskFullError`;
* :mod:`.inputs`: :class:`Inputs`, the test of a destination against the inputs;
* :mod:`.filelog`: the per-folder log of the files we wrote (:func:`record_file`, :func:`our_record`);
* :mod:`.stores`: the mark of the zarr stores we wrote (:func:`store_state`, :func:`store_mark`);
* :mod:`.checks`: the decision before the work (:func:`check_file`, :func:`check_store`,
  :func:`check_folder_writable`);
* :mod:`.temporaries`: temporary names and the removal of those dead runs left;
* :mod:`.atomic`: :func:`atomic_file`, :func:`atomic_store` and their commits (:class:`Claim`);
* :mod:`.run_folders`: training run folders.
"""

from __future__ import annotations

from .atomic import Claim, atomic_file, atomic_store, fingerprint
from .checks import check_file, check_folder_writable, check_store, same_made
from .errors import DiskFullError, OutputError
from .filelog import LOG_NAME, made_by_us, our_record, record_file
from .inputs import Inputs, refuse_inputs
from .run_folders import RUN_MARKER, check_run_folder, claim_run_folder
from .stores import ZARR_KEY, foreign_entry, store_mark, store_state
from .temporaries import remove_stale_in, remove_stale_partials

__all__ = [
    "LOG_NAME", "RUN_MARKER", "ZARR_KEY", "Claim", "DiskFullError", "Inputs", "OutputError", "atomic_file",
    "atomic_store", "check_file", "check_folder_writable", "check_run_folder", "check_store", "claim_run_folder",
    "fingerprint", "foreign_entry", "made_by_us", "our_record", "record_file", "refuse_inputs", "remove_stale_in",
    "remove_stale_partials", "same_made", "store_mark", "store_state",
]
