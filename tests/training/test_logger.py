"""Progress bars only on a terminal; a TorchX or Slurm log gets one metrics line per `log_every` steps."""

import io

from dfgr_torchrec.training.logger import progress_bar


class _Stdout(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_bar_only_on_a_tty_of_the_main_rank(monkeypatch):
    monkeypatch.setattr("sys.stderr", _Stdout(tty=True))
    assert not progress_bar(10, 0, "epoch 0", enabled=True).disable
    assert progress_bar(10, 0, "epoch 0", enabled=False).disable  # other ranks
    monkeypatch.setattr("sys.stderr", _Stdout(tty=False))
    assert progress_bar(10, 0, "epoch 0", enabled=True).disable
