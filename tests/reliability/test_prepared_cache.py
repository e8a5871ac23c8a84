"""The prepared-data cache: keyed on the log's content, damaged copies are prepared again or
refused by name, and a prepared copy is used (with a warning) when the raw log is gone."""

import json
import os

import numpy as np
import pytest
import torch.distributed as dist

from dfgr_torchrec.data.dataset import PreparedData
from tests.reliability.conftest import prepare, write_log, write_yaml


def _prepared(out: str) -> str:
    """The folder named on the first line ``prepared <path>: ...`` / ``up to date: <path>``."""
    first = out.split("\n", 1)[0]
    return first.split(": ", 1)[1] if first.startswith("up to date") else first.split(" ")[1].rstrip(":")


def test_rewrite_with_same_size_and_mtime_is_not_stale(tmp_path, capsys):
    log = write_log(tmp_path)
    config = write_yaml(tmp_path, log)
    code, out, _ = prepare(capsys, config)
    first = _prepared(out)
    stat = os.stat(log)
    flipped = log.read_text().replace("\t1\n", "\tX\n").replace("\t0\n", "\t1\n").replace("\tX\n", "\t0\n")
    log.write_text(flipped)  # same size, every click label flipped
    os.utime(log, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` would
    code, out, err = prepare(capsys, config)
    assert code == 0, err
    second = _prepared(out)
    assert second != first and not out.startswith("up to date")
    labels = np.load(f"{first}/labels.npy"), np.load(f"{second}/labels.npy")
    assert (labels[0] == 1 - labels[1]).all()
    source = json.load(open(f"{second}/meta.json"))["source"]
    assert source["size"] == stat.st_size and len(source["blake2b"]) == 32


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_array_is_prepared_again(tmp_path, capsys, damage):
    config = write_yaml(tmp_path, write_log(tmp_path))
    _, out, _ = prepare(capsys, config)
    path = _prepared(out)
    item = f"{path}/item.npy"
    size = os.path.getsize(item)
    if damage == "delete":
        os.remove(item)
    else:
        os.truncate(item, size - 8)
    code, out, err = prepare(capsys, config)
    assert code == 0, err
    assert f"preparing {path} again: {item}: " in err and not out.startswith("up to date")
    assert os.path.getsize(item) == size
    meta = json.load(open(f"{path}/meta.json"))
    assert meta["arrays"]["item.npy"]["bytes"] == size and len(meta["arrays"]["item.npy"]["blake2b"]) == 32


def test_opening_a_damaged_copy_names_the_file(tmp_path, capsys):
    _, out, _ = prepare(capsys, write_yaml(tmp_path, write_log(tmp_path)))
    path = _prepared(out)
    os.truncate(f"{path}/labels.npy", 10)
    with pytest.raises(
        ValueError, match=r"not an intact prepared data set: .*labels\.npy: 10 bytes, \d+ when it was written"
    ):
        PreparedData(path)


def test_gone_source_uses_the_prepared_copy(tmp_path, capsys):
    log = write_log(tmp_path)
    config = write_yaml(tmp_path, log)
    _, out, _ = prepare(capsys, config)
    path = _prepared(out)
    os.rename(log, tmp_path / "moved.tsv")
    code, out, err = prepare(capsys, config)
    assert code == 0
    assert f"warning: {log} (source.path of 'rel') is gone; using the prepared copy {path}" in err
    assert json.loads(out)["rows_kept"] == 8


def test_training_opens_the_prepared_copy_when_the_source_is_gone(tmp_path, capsys):
    from dfgr_torchrec.training.data import prepare_data

    log = write_log(tmp_path)
    config = write_yaml(tmp_path, log)
    _, out, _ = prepare(capsys, config)
    os.remove(log)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        data = prepare_data(str(config))
    finally:
        dist.destroy_process_group()
    assert data.path == _prepared(out) and data.num_users == 2
    assert "is gone; using the prepared copy" in capsys.readouterr().err


def _dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftovers_of_a_killed_prepare_are_removed(tmp_path, capsys):
    import socket

    config = write_yaml(tmp_path, write_log(tmp_path))
    _, out, _ = prepare(capsys, config)
    path = _prepared(out)
    parent, base = os.path.split(path)
    killed = os.path.join(parent, f".tmp-{base}-pid{_dead_pid()}@{socket.gethostname()}-0123abcd")
    legacy = os.path.join(parent, f".tmp-{base}-k1x_9z")  # tempfile.mkdtemp's name, from an older version
    live = os.path.join(parent, f".tmp-{base}-pid{os.getpid()}@{socket.gethostname()}-89abcdef")
    for folder in (killed, legacy, live):
        os.makedirs(folder)
        open(os.path.join(folder, "item.npy"), "w").write("half")
    os.utime(legacy, (0, 0))
    os.remove(f"{path}/item.npy")  # so the next prepare writes again
    code, _, err = prepare(capsys, config)
    assert code == 0, err
    assert not os.path.exists(killed) and not os.path.exists(legacy)
    assert os.path.exists(live)  # a running writer's folder is left alone


def test_prepared_folder_respects_the_umask(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        _, out, _ = prepare(capsys, write_yaml(tmp_path, write_log(tmp_path)))
    finally:
        os.umask(old)
    assert os.stat(_prepared(out)).st_mode & 0o777 == 0o755
