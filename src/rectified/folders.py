"""Output folders of the commands, checked before any work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def writable_folder(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """``path`` as a folder that exists and takes files, or ``ValueError`` naming the flag.

    Checked before any work, so a read-only or mistyped ``--out`` fails in a second rather
    than after the first run, with one line instead of an ``OSError`` traceback.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"{flag} {str(path)!r} is not a writable folder ({reason})") from None
    return folder
