"""Bounds on a request, checked before it is parsed or padded, so one line cannot exhaust memory.

Each violation is an error of its line only (the other lines are scored). ``dfgr score`` takes
them as ``--max-line-bytes``, ``--max-id-chars``, ``--max-candidates`` and ``--max-history``;
:meth:`~dfgr_torchrec.serving.ranker.Ranker.load` as ``limits=RequestLimits(...)``.

Example::

    limits = RequestLimits(line_bytes=64 << 10, candidates=1000)
    for line in bounded_lines(open("requests.jsonl", "rb"), limits.line_bytes): ...
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import BinaryIO, Iterator

MAX_CANDIDATES = 1 << 16  # the compiled graph's bound on candidates per request

FLAGS = {
    "line_bytes": "--max-line-bytes",
    "id_chars": "--max-id-chars",
    "candidates": "--max-candidates",
    "history": "--max-history",
}


@dataclass(frozen=True)
class RequestLimits:
    """``line_bytes``: one JSONL line (its newline excluded); ``id_chars``: one raw id (user, item,
    side feature, action); ``candidates`` and ``history``: interactions of one request."""

    line_bytes: int = 1 << 20
    id_chars: int = 256
    candidates: int = MAX_CANDIDATES
    history: int = 100_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{FLAGS[f.name]} ({f.name}): expected a positive integer, got {value!r}")

    def exceeded(self, name: str, count: int, what: str) -> str:
        """The message of a request with ``count`` ``what`` over the limit ``name``."""
        return f"{count} {what}, more than the limit of {getattr(self, name)} ({FLAGS[name]})"


def bounded_lines(f: BinaryIO, line_bytes: int) -> Iterator[bytes]:
    """The lines of a binary file, each read with at most ``line_bytes + 2`` bytes in memory: a longer
    line is yielded as its first ``line_bytes + 2`` bytes (its rest is skipped), so the parser
    reports it over the limit and the line numbers of the following lines stay right."""
    while True:
        line = f.readline(line_bytes + 2)
        if not line:
            return
        if not line.endswith(b"\n") and len(line) == line_bytes + 2:
            while True:  # skip the rest of the long line, chunk by chunk
                rest = f.readline(1 << 16)
                if not rest or rest.endswith(b"\n"):
                    break
        yield line
