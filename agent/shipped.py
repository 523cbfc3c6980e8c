"""Files that ship with the agent but are not Python: the example config and the versioned SQL.

In a source checkout (and an editable install) they are at the top of the repository, where the layout puts
them; a wheel installs them under `<prefix>/share/cdc-agent/` (pyproject's data-files), because setuptools
only packs files outside a package that way.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def _is_checkout() -> bool:
    return (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "migrations").is_dir()


def _install_dirs() -> list[Path]:
    prefixes = [sysconfig.get_path("data"), sys.prefix]
    try:
        prefixes.append(sysconfig.get_path("data", f"{os.name}_user"))     # pip install --user
    except KeyError:
        pass
    out: list[Path] = []
    for p in prefixes:
        d = Path(p) / "share" / "cdc-agent"
        if d not in out:
            out.append(d)
    return out


def shipped(relative: str) -> Path:
    """The path of a shipped file or directory; the checkout's path when it is nowhere (errors name it)."""
    if _is_checkout():
        return CHECKOUT / relative
    for d in _install_dirs():
        if (d / relative).exists():
            return d / relative
    return CHECKOUT / relative


def is_installed_copy(path: Path) -> bool:
    """True for a file that lives in the installed share directory (not to be written next to)."""
    return not _is_checkout() and any(path.resolve().is_relative_to(d.resolve()) for d in _install_dirs())
