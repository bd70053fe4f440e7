"""One run at a time per output folder: an exclusive lock on the folder itself, held for the run's duration."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

from fusionlungnet_monai.data.errors import InputError

__all__ = ["output_lock", "remove_stale_partials", "BUSY", "PARTIAL_PREFIX"]

#: the hidden folder a case is staged in before its files are renamed into place (``Predictor.predict``)
PARTIAL_PREFIX = ".fusionlungnet-partial-"

#: what a second run into a locked output folder says (without --overwrite)
BUSY = ("another fusionlungnet run is writing to this folder; wait for it to finish, choose another output folder, "
        "or pass --overwrite to wait for it and then replace its results")


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock (``flock``) on ``folder`` while the block runs: two runs into one folder would mix
    one case's mask with another's report, or replace each other's results. The lock lives on the open folder, so
    nothing is left behind, and the system drops it when the process ends, however it ends. Where ``fcntl`` is
    missing (Windows) the block runs unlocked.

    Args:
        folder: an existing output folder.
        wait: wait for the other run to finish instead of refusing (``--overwrite``: then a consistent set replaces
            its results).

    Raises:
        InputError: naming ``folder`` when another run holds it and ``wait`` is false.
    """
    try:
        import fcntl
    except ImportError:  # no flock on this platform
        yield
        return
    fd = os.open(str(folder), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise InputError(Path(folder), BUSY) from None
            print(f"waiting   {folder}: another fusionlungnet run is writing there", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove the staging folders (:data:`PARTIAL_PREFIX`) a killed run (SIGKILL, power loss) left in ``folder`` and
    in its case folders. Call it holding :func:`output_lock`: no other run is writing there then.

    Returns:
        the folders removed.
    """
    import shutil

    folder = Path(folder)
    found = [p for pattern in (f"{PARTIAL_PREFIX}*", f"*/{PARTIAL_PREFIX}*") for p in folder.glob(pattern)
             if p.is_dir() and not p.is_symlink()]
    for p in found:
        shutil.rmtree(p, ignore_errors=True)
    return found
