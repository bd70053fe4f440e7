"""One exception type for bad user input: a single clear line naming the path and the problem."""

from __future__ import annotations

import logging
import os

__all__ = ["InputError", "NothingToSegment", "find_input_error", "report_input_errors"]


class InputError(ValueError):
    """Raised for unusable input data (empty folder, not DICOM, size mismatch, unsupported mode, ...).

    Args:
        path: the file or folder at fault.
        problem: what is wrong with it, in plain words.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class NothingToSegment(InputError):
    """Raised for DICOM input that holds no CT volume at all: only localizers, reformats of a few slices, reports,
    other modalities. A study exported series by series has such folders beside its CT; a batch run skips them."""


def find_input_error(exc: BaseException | None) -> InputError | None:
    """The :class:`InputError` behind ``exc`` (itself, or in its ``__cause__``/``__context__`` chain, as MONAI's
    ``apply_transform`` and config parser wrap it), or ``None``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def report_input_errors() -> None:
    """Make a ``python -m monai.bundle run`` that fails on bad input end in one line, ``error: PATH: PROBLEM``,
    instead of the tracebacks of MONAI's config parser and ignite (the exit status stays 1). Other errors keep
    their traceback, and ``FUSIONLUNGNET_DEBUG=1`` keeps every traceback. The bundle configs call this in
    ``initialize``; it acts only in a ``python -m monai.bundle`` process (a Python program that runs a bundle
    workflow keeps its own exception hook), and calling it again does nothing. After the line, the process ends at
    once with status 1 (``os._exit``, logs flushed): loader threads still reading must not run into the interpreter's
    shutdown."""
    import sys

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(spec, "name", None) != "monai.bundle.__main__":
        return
    if os.environ.get("FUSIONLUNGNET_DEBUG", "") not in ("", "0") or getattr(sys.excepthook, "_fln", False):
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        err = find_input_error(value)
        if err is None:
            return previous(kind, value, tb)
        print(f"error: {err} (FUSIONLUNGNET_DEBUG=1 shows the traceback)", file=sys.stderr)
        # end here: a bad item met by CacheDataset's loading threads leaves the others reading (ITK, torch), and
        # the interpreter's shutdown under them aborted the process ("terminate called without an active exception",
        # SIGABRT instead of exit status 1)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    hook._fln = True  # type: ignore[attr-defined]
    sys.excepthook = hook
