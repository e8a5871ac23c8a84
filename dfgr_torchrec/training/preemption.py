"""Preemption: SIGTERM (a scheduler's stop; torchrun forwards it to its workers) or SIGUSR1 (Slurm's
``--signal`` warning) ends a run with one checkpoint and :data:`~dfgr_torchrec.errors.PREEMPTED_EXIT`.

A signal only sets a flag and arms a timer. After every step the ranks agree (one ``all_reduce``
MAX of their flags on the run's process group, a few microseconds), so all of them stop after the
same step, whichever rank was signalled; they save one collective checkpoint through the periodic
path (:meth:`TrainRecipe.save`), rank 0 logs one line and every rank raises :class:`Preempted`.
Nothing final is written (no ``metrics_final.json``): ``--resume`` continues the run exactly.

The timer (``train.preempt_grace_s`` after the signal) hard-exits a rank still running, so a
preempted job never hangs, e.g. on a peer that died before agreeing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable, Optional

import torch
import torch.distributed as dist

from dfgr_torchrec.errors import PREEMPTED_EXIT, Preempted

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_WAIT_POLLS, _WAIT_POLL_S = 2400, 0.05  # the test hook waits at most 2 minutes


class Preemption:
    """Args: ``grace_s`` the time a rank may take after the signal; ``rank`` / ``device`` of this
    process; ``wait_at_step`` a test hook (0: off): every rank waits after that step for a signal."""

    def __init__(self, grace_s: float, rank: int, device: torch.device, wait_at_step: int = 0) -> None:
        """A context manager too: handles the signals inside the ``with`` block."""
        self.grace_s, self.rank, self.device, self.wait_at_step = grace_s, rank, device, wait_at_step
        self.signal: Optional[str] = None  # the first signal this rank received
        self.since: Optional[float] = None  # when (or when the ranks agreed, on a rank not signalled)
        self.step_s, self.save_s = 0.0, 0.0  # the last step's and the last checkpoint's durations
        self._last = time.perf_counter()
        self._previous: dict = {}

    @classmethod
    def of(cls, train, env, hooks=None) -> "Preemption":
        """For a run's ``train`` config section on the process ``env`` (a :class:`DistEnv`), with the
        test hook ``hooks.wait_for_signal_at_step`` (``hooks``: the run's fault hooks, or None)."""
        return cls(train.preempt_grace_s, env.rank, env.device, getattr(hooks, "wait_for_signal_at_step", 0))

    def install(self) -> "Preemption":
        """Handles SIGTERM and SIGUSR1 from now on (the main thread only: Python's rule)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._received) for sig in SIGNALS}
        return self

    def uninstall(self) -> None:
        """The previous handlers back and the timer off (a run that ended, or an in-process test)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        signal.setitimer(signal.ITIMER_REAL, 0)

    def __enter__(self) -> "Preemption":
        return self.install()

    def __exit__(self, kind, error, trace) -> None:
        if kind is not Preempted:  # preempted: the timer stays armed until the process has exited
            self.uninstall()

    def _received(self, signum: int, frame) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum).name
            self._arm()

    def _arm(self) -> None:
        self.since = time.perf_counter()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGALRM, self._expired)
            signal.setitimer(signal.ITIMER_REAL, self.grace_s)

    def _expired(self, signum: int, frame) -> None:
        print(
            f"rank {self.rank}: train.preempt_grace_s={self.grace_s:g} s after {self.signal or 'the stop'} "
            f"ran out: exiting now (status {PREEMPTED_EXIT}; --resume continues from the latest intact "
            f"checkpoint)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(PREEMPTED_EXIT)

    def timed(self, save: Callable[[], str]) -> str:
        """Runs a checkpoint save, remembering how long it took (the estimate of the next one)."""
        start = time.perf_counter()
        path = save()
        self.save_s = time.perf_counter() - start
        return path

    def requested(self) -> bool:
        """Collective: whether any rank received a stop signal."""
        flag = torch.tensor([1.0 if self.signal else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def after_step(self, step: int, save: Callable[[], str]) -> None:
        """Collective, after every step: if any rank was signalled, saves with ``save`` and raises
        :class:`Preempted` on every rank."""
        now = time.perf_counter()
        self.step_s, self._last = now - self._last, now
        if step == self.wait_at_step:
            self._wait_for_signal(step)
        if self.requested():
            self._stop(step, save)

    def _wait_for_signal(self, step: int) -> None:
        print(
            f"rank {self.rank} pid {os.getpid()}: testing.wait_for_signal_at_step={step}: waiting for a signal",
            file=sys.stderr,
            flush=True,
        )
        for _ in range(_WAIT_POLLS):  # a count, not a clock: every rank polls as often
            if self.requested():
                return
            time.sleep(_WAIT_POLL_S)

    def _stop(self, step: int, save: Callable[[], str]) -> None:
        if self.since is None:  # another rank was signalled: this one gets the same grace from now
            self._arm()
        elapsed = time.perf_counter() - self.since
        expected = max(elapsed, self.step_s) + self.save_s
        if self.rank == 0 and expected > self.grace_s:
            print(
                f"preempted at step {step}: the step ({self.step_s:.1f} s) and the last save ({self.save_s:.1f} s) "
                f"may not fit train.preempt_grace_s={self.grace_s:g} s: saving anyway",
                file=sys.stderr,
                flush=True,
            )
        path = self.timed(save)
        if self.rank == 0:
            print(
                f"preempted at step {step}: checkpoint saved to {path}, resume with --resume "
                f"({self.signal or 'signal to another rank'}; {time.perf_counter() - self.since:.1f} s of "
                f"train.preempt_grace_s={self.grace_s:g} s)",
                file=sys.stderr,
                flush=True,
            )
        raise Preempted(step, path)
