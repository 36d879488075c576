"""``trace``: online intervals replayed from a CSV (FedScale's availability traces)."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path

from .base import Availability

COLUMNS = ("client_id", "start", "end")
"""The trace's header: one online interval [start, end) per row, virtual seconds."""


class TraceError(ValueError):
    """A trace file that cannot be read; the message says where."""


def read_trace(path: str | Path) -> dict[int, list[tuple[float, float]]]:
    """The online intervals of a ``client_id,start,end`` CSV, per client, sorted and merged.

    Overlapping or touching intervals of one client are merged into one.

    Raises
    ------
    TraceError
        If the file is missing, its header is not ``client_id,start,end``, or
        a row has a negative client id, a non-number, or ``start >= end``.
    """
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"trace file {path} does not exist")
    intervals: dict[int, list[tuple[float, float]]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [cell.strip() for cell in next(reader, [])]
        if tuple(header) != COLUMNS:
            raise TraceError(f"{path}: the header must be {','.join(COLUMNS)}, got {','.join(header)}")
        for line, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            try:
                client, start, end = int(row[0]), float(row[1]), float(row[2])
            except (ValueError, IndexError):
                raise TraceError(f"{path}:{line}: expected client_id,start,end, got {','.join(row)}") from None
            if client < 0 or not start < end:
                raise TraceError(
                    f"{path}:{line}: needs client_id >= 0 and start < end, got {','.join(row)}"
                )
            intervals.setdefault(client, []).append((start, end))
    return {client: _merged(spans) for client, spans in sorted(intervals.items())}


def _merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class Trace(Availability):
    """Each client is online during its listed intervals, offline otherwise.

    A client the trace does not list is never online; after its last
    interval a client stays offline.

    Parameters
    ----------
    intervals : Mapping[int, list[tuple[float, float]]]
        Online intervals [start, end) per client (sorted, disjoint), e.g.
        from :func:`read_trace`.
    """

    name = "trace"

    def __init__(self, intervals: Mapping[int, list[tuple[float, float]]]) -> None:
        self.online = {int(c): _merged(list(spans)) for c, spans in intervals.items()}

    @classmethod
    def from_csv(cls, path: str | Path) -> Trace:
        """The trace of a ``client_id,start,end`` file (see :func:`read_trace`)."""
        return cls(read_trace(path))

    def intervals(self, client: int) -> Iterator[tuple[float, float]]:
        """The listed intervals of ``client``."""
        yield from self.online.get(client, [])

    def describe(self) -> str:
        """The model, for logs."""
        return f"trace ({len(self.online)} clients)"
