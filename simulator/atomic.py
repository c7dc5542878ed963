"""The one way mupriv writes a file that someone may read while it is written: atomically.

The content goes to a temporary file with a unique name in the same folder (so two processes writing
the same path never share a temporary file), then `os.replace` puts it over the target in one step:
a reader sees the old file or the whole new one, never half of it, and a crash or a full disk leaves
the old file as it was.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Union

# What a finished file gets: mkstemp creates 0o600, which other users (and `cp -p`) would inherit.
FILE_MODE = 0o644

Content = Union[bytes, str, Callable[[str], None]]


def atomic_write(path: str | Path, content: Content, *, fsync: bool = False, mode: int = FILE_MODE) -> Path:
    """Write ``content`` to ``path`` atomically and return ``path``.

    ``content`` is bytes, text (UTF-8), or a function that writes the temporary file given its path
    (``np.savez``, ``torch.save``, ``DataFrame.to_csv``). The temporary name keeps the target's suffix,
    because writers such as ``np.savez`` append one otherwise. ``fsync`` also flushes the file to disk
    before the rename (for files that must survive a power cut, not only a crash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    except OSError as e:
        e.filename = str(path)  # the user's file, not our temporary name
        raise
    try:
        if callable(content):
            os.close(fd)
            fd = -1
            content(tmp)
        else:
            with os.fdopen(fd, "wb") as fh:
                fd = -1
                fh.write(content.encode() if isinstance(content, str) else content)
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
        if fsync and callable(content):
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename in (tmp, None):
            e.filename = str(path)  # the user's file, not our temporary name
        raise
    return path


def publish(part: str | Path, path: str | Path) -> Path:
    """Move a finished ``part`` file over ``path`` in one step and return ``path``.

    For files that cannot be written in one go under a unique temporary name: a download that must resume after
    an interruption needs a name it can find again (``NAME.part``). The caller makes sure one process writes the
    part at a time (``mupriv data fetch`` holds a lock on its folder); readers still see the old file or the
    whole new one."""
    path = Path(path)
    os.chmod(part, FILE_MODE)
    os.replace(part, path)
    return path
