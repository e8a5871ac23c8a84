"""Timestamps in one unit: a log whose rows mix epoch seconds, milliseconds, microseconds or
nanoseconds would sort the coarser rows first and change every user's order, the split and the
duplicate check, so it is refused before anything is built, naming a line of each unit.

A row's unit is read from its magnitude: a value is an epoch time in a unit when, read in that
unit, it falls between 1990 and 2100. Ordinal timestamps (0, 1, 2, ... or day numbers) fall in no
band and are never flagged; neither is a log in any single unit.
"""

from __future__ import annotations

from typing import Callable, List, Tuple

import numpy as np

from dfgr_torchrec.data.readers import BadInputError

# (unit, seconds per unit) and the plausible epoch range in seconds
UNITS = (("seconds", 1.0), ("milliseconds", 1e-3), ("microseconds", 1e-6), ("nanoseconds", 1e-9))
EPOCH_RANGE_S = (631_152_000, 4_102_444_800)  # 1990-01-01 .. 2100-01-01 UTC


def unit_counts(timestamps: np.ndarray) -> List[Tuple[str, np.ndarray]]:
    """``[(unit, row indices)]`` of every unit some rows are plausible epoch times in."""
    lo, hi = EPOCH_RANGE_S
    t = np.asarray(timestamps, dtype=np.float64)
    found = []
    for unit, seconds in UNITS:
        rows = np.flatnonzero((t >= lo / seconds) & (t < hi / seconds))
        if rows.size:
            found.append((unit, rows))
    return found


def check_one_unit(
    path: str, column: str, timestamps: np.ndarray, positions: np.ndarray, locate: Callable[[int], Tuple[str, int]]
) -> None:
    """Raises :class:`BadInputError` when ``timestamps`` mix epoch units (see the module's doc)."""
    found = unit_counts(timestamps)
    if len(found) >= 2:
        summary = [(unit, rows.size, int(positions[rows[0]]), int(timestamps[rows[0]])) for unit, rows in found]
        raise mixed_units_error(path, column, summary, locate)


def mixed_units_error(
    path: str, column: str, found: List[Tuple[str, int, int, int]], locate: Callable[[int], Tuple[str, int]]
) -> BadInputError:
    """The error of a log whose timestamps mix units; ``found``: ``(unit, rows, position and
    timestamp of its first row)`` of each unit."""
    parts = []
    for unit, n, position, timestamp in found:
        file, line = locate(int(position))
        parts.append(f"{n} row(s) in {unit} (first {file}:{line}, {int(timestamp)})")
    return BadInputError(
        f"{path}: the timestamp column {column!r} mixes units: {'; '.join(parts)}; convert it to one unit "
        f"before preparing (rows would otherwise sort by unit, not by time)"
    )
