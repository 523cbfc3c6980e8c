"""Private by default: the state directory is created 0700 and the files in it 0600, since the spool holds
every captured row. An existing directory keeps the mode the operator gave it."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import SpoolError

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_state_dir(path: Path) -> Path:
    """Create `path` (and missing parents) as 0700 unless it exists; a clear error when it cannot be a
    directory (a file is in the way, no permission)."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.exists() or path.is_symlink():
        raise SpoolError(f"state_dir {path} exists and is not a directory: point [agent] state_dir at a "
                         f"directory, or move the file away")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, DIR_MODE)       # mode & ~umask: a umask never widens it
    except FileExistsError:
        if not path.is_dir():
            raise SpoolError(f"state_dir {path} exists and is not a directory") from None
    except OSError as e:
        raise SpoolError(f"cannot create state_dir {path}: {e.strerror or e} (check the permissions of "
                         f"{path.parent})") from None
    return path


def create_private_file(path: Path) -> None:
    """Create `path` empty as 0600 if it does not exist, before SQLite opens it: SQLite would create it
    0644, and gives its -wal and -shm files the mode of the database file."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass
    except OSError as e:
        raise SpoolError(f"cannot create {path}: {e.strerror or e}") from None
