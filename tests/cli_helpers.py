"""Running the ``napari-liif`` command in-process, and its one-line error rule.

* ``run(capsys, *argv) -> (status, stdout, stderr)``: ``cli.main`` on ``argv`` (each turned into
  a string), with what it printed.
* ``one_line(err)``: the single line of ``err``, failing the test if there is more than one line
  or a traceback.
"""

from __future__ import annotations

from napari_liif.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert "Traceback" not in err, f"a traceback on stderr: {err!r}"
    return lines[0]
