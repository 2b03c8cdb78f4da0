"""A finding of the offline verification and its severity (the vocabulary of ``shardbroker
check`` and ``dump-log``).

Severities: ``damage`` (acknowledged data is wrong or would be lost, or a file the broker trusts is
wrong), ``repairable`` (what the broker's recovery fixes on its next start without losing an
acknowledged write: a torn tail, an index it rebuilds anyway, a bad checkpoint) and ``note``
(leftover files, offset gaps). Each finding names the file, the byte position, the offset and the
rule broken; at most :data:`MAX_REPORTED` per file and kind are listed (`capped`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

__all__ = ["MAX_REPORTED", "Problem", "Severity", "capped"]

#: Findings listed per file and kind; the rest are counted in one more line.
MAX_REPORTED: Final = 20


class Severity(StrEnum):
    DAMAGE = "damage"
    REPAIRABLE = "repairable"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. ``position`` is a byte position in ``path``; ``offset`` the record offset
    concerned; ``batch`` the batch's number in its segment (0 = first), for log files."""

    severity: Severity
    kind: str
    path: Path
    message: str
    position: int | None = None
    offset: int | None = None
    batch: int | None = None

    def describe(self, root: Path | None = None) -> str:
        """One line: ``damage: t-0/00000000000000000000.log: position 4162, offset 37, batch 12:
        CRC-32C mismatch ...`` (the file relative to ``root`` when it is under it)."""
        path = self.path
        if root is not None and path.is_relative_to(root):
            path = path.relative_to(root)
        where = [f"{name} {value}" for name, value in self._where() if value is not None]
        parts = [str(self.severity), str(path), *([", ".join(where)] if where else []), self.message]
        return ": ".join(parts)

    def _where(self) -> tuple[tuple[str, int | None], ...]:
        return (("position", self.position), ("offset", self.offset), ("batch", self.batch))

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": str(self.severity),
            "kind": self.kind,
            "file": str(self.path),
            "position": self.position,
            "offset": self.offset,
            "batch": self.batch,
            "message": self.message,
        }


def capped(problems: list[Problem]) -> list[Problem]:
    """At most MAX_REPORTED findings per (file, kind), plus one line counting the rest."""
    seen: dict[tuple[Path, str], int] = {}
    out: list[Problem] = []
    for p in problems:
        key = (p.path, p.kind)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= MAX_REPORTED:
            out.append(p)
    for (path, kind), count in seen.items():
        if count > MAX_REPORTED:
            worst = min((p for p in problems if p.path == path and p.kind == kind), key=_rank)
            out.append(
                Problem(worst.severity, kind, path, f"{count - MAX_REPORTED} more {kind} findings not listed")
            )
    return out


def _rank(p: Problem) -> int:
    return list(Severity).index(p.severity)
