"""``python -m dfgr_torchrec.training.torchrun``: torchrun (same arguments) whose preemption ends as one line
and :data:`~dfgr_torchrec.errors.PREEMPTED_EXIT` instead of a traceback and status 1.

Plain torchrun ends a SIGTERM to its agent with a ``SignalException`` traceback and status 1, and
workers that exited 143 after their checkpoint with a ``ChildFailedError`` traceback: neither tells a
scheduler "requeue me". Here the agent also forwards SIGUSR1 (Slurm's ``--signal`` warning) to the
workers, and waits ``--shutdown-timeout`` (default 30 s, keep it >= ``train.preempt_grace_s``) for them.
Any other failure is torchrun's own.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import List, Optional

from dfgr_torchrec.errors import PREEMPTED_EXIT

HANDLED = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"  # torchrun's default and SIGUSR1


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("PET_SIGNALS_TO_HANDLE", HANDLED)  # the --signals-to-handle default
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(argv))
    except SignalException as e:
        name = signal.Signals(e.sigval).name
        print(
            f"torchrun: {name}: the workers were told to save a checkpoint and stop; exiting with status "
            f"{PREEMPTED_EXIT} (requeue, then --resume continues)",
            file=sys.stderr,
            flush=True,
        )
        return PREEMPTED_EXIT
    except ChildFailedError as e:
        # the first worker to exit 143 makes the agent SIGTERM the others, which may be past their
        # handler (Python restores the default one while it shuts down): they had saved too, since
        # a worker exits 143 only after the collective save (or after its grace ran out)
        codes = {failure.exitcode for failure in e.failures.values()}
        if PREEMPTED_EXIT not in codes or not codes <= {PREEMPTED_EXIT, -signal.SIGTERM}:
            raise
        print(
            f"torchrun: the workers were preempted and saved a checkpoint; exiting with status {PREEMPTED_EXIT} "
            f"(requeue, then --resume continues)",
            file=sys.stderr,
            flush=True,
        )
        return PREEMPTED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
