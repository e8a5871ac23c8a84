"""The errors a run reports as one line (no traceback): each names the file, folder or config key
at fault and what was expected."""

from __future__ import annotations


class RunError(RuntimeError):
    """A run cannot start or continue: a run directory, checkpoint or collective problem."""
