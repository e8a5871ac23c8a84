"""A disk that fills while `dfgr data prepare` writes: one line naming the folder, exit 2, and the
copy prepared before it is still there and intact (the write goes to a temporary folder first)."""

import subprocess

import pytest

from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.prepare import find_prepared

from .conftest import ROWS, prepare, write_log, write_yaml


@pytest.mark.parametrize("engine", ["duckdb", "python"])
def test_a_full_disk_keeps_the_previous_copy(tmp_path, capsys, engine):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        log = write_log(tmp_path, ROWS)
        config = write_yaml(tmp_path, log, output_dir=str(disk / "prepared"), source={"engine": engine})
        code, _, err = prepare(capsys, config)
        assert code == 0, err
        before = find_prepared(load_data_config(str(config)))
        _fill(disk)
        code, _, err = prepare(capsys, config, "--force")
        assert code == 2
        assert f"cannot write {before}: no space left on device (the previous copy is kept)" in err, err
        assert find_prepared(load_data_config(str(config))) == before  # still there, its digests intact
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _fill(disk):
    """Writes zeros until the tmpfs is full."""
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
