"""The errors a run reports as one line (no traceback): each names the file, folder or config key
at fault and what was expected. Torch-free and outside the training package, so every command
(``dfgr score`` included) catches them without importing training code."""

from __future__ import annotations


class RunError(RuntimeError):
    """A run cannot start or continue: a run directory, checkpoint or collective problem."""


# The exit status of a preempted run (SIGTERM or SIGUSR1, its checkpoint saved): 128 + SIGTERM, what a
# process ended by SIGTERM reports, so a scheduler rule written for "terminated" (a Kubernetes
# podFailurePolicy, a Slurm script's `[ $? -eq 143 ] && scontrol requeue`) reads it as a preemption,
# and non-zero, so torchrun's --max-restarts and TorchX's max_retries retry it (then --resume continues).
PREEMPTED_EXIT = 143


class Preempted(Exception):
    """Raised on every rank once the preemption checkpoint is saved: the entry points end the
    process with :data:`PREEMPTED_EXIT` (not an error: nothing is printed after the log line)."""

    def __init__(self, step: int, path: str) -> None:
        super().__init__(f"preempted at step {step}: checkpoint saved to {path}")
        self.step, self.path = step, path
