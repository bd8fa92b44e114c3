"""Run the coopnets command line with a simulated disk fault under one folder, for tests that
cannot make a real read-only or full file system without root:

    python tests/faults.py erofs|enospc FOLDER coopnets-args...

erofs: opening any file under FOLDER for writing fails with EROFS (read-only file system);
enospc: the open succeeds but every write fails with ENOSPC (no space left on device), as a
full disk does. Everything else is the real CLI (``coopnets.commands.main``).
"""
import builtins
import errno
import os
import sys
from pathlib import Path

mode, folder, argv = sys.argv[1], Path(sys.argv[2]).resolve(), sys.argv[3:]
_open = builtins.open


class FullDisk:
    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def faulty_open(file, mode_="r", *args, **kw):
    writes = any(c in mode_ for c in "wax+")
    inside = isinstance(file, (str, os.PathLike)) and Path(file).resolve().is_relative_to(folder)
    if writes and inside and mode == "erofs":
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
    fh = _open(file, mode_, *args, **kw)
    return FullDisk(fh) if writes and inside and mode == "enospc" else fh


builtins.open = faulty_open
import pathlib  # noqa: E402  Path.write_text and friends go through io.open

pathlib.io.open = faulty_open
from coopnets.commands import main  # noqa: E402

sys.exit(main(argv))
