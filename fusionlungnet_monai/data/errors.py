"""One exception type for bad user input: a single clear line naming the path and the problem."""

from __future__ import annotations

import os

__all__ = ["InputError"]


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
