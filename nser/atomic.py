"""Writes that a `kill -9` cannot leave half done: the text goes to a temporary file in the same folder, which
then replaces the target in one rename (`os.replace`). A reader sees the old file or the new one, never a
truncated one; a kill mid-write leaves at most a hidden `.<name>.*.tmp` file, which nothing reads."""

import os
import tempfile
from pathlib import Path


def _file_mode():
    """The mode an ordinary `open(path, "w")` gets (0644 under the usual umask 022); mkstemp gives 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path, data: bytes) -> Path:
    """Write `data` to `path` atomically (same folder temporary file, fsync, rename). Returns the path."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, _file_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path, text: str, encoding: str = "utf-8") -> Path:
    """`Path.write_text`, atomically (see `write_bytes_atomic`). Encoding errors are raised before any write."""
    return write_bytes_atomic(path, text.encode(encoding))
