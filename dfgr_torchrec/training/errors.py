"""The run errors, where the training code has always imported them from (defined in
:mod:`dfgr_torchrec.errors`, so the command line catches them without importing the training package)."""

from dfgr_torchrec.errors import PREEMPTED_EXIT, Preempted, RunError

__all__ = ["PREEMPTED_EXIT", "Preempted", "RunError"]
