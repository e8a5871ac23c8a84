"""A run folder received from someone else is data, not code: a checkpoint whose pickles would run
something (DCP ``.metadata``, ``extra.pt``, ``rng-rank<r>.pt``, a non-tensor DCP entry) is refused by
``dfgr eval``, ``--resume`` and ``dfgr export`` with one line, and the hostile code never runs.

The hostile files are built here: a pickle whose ``__reduce__`` would create a marker file, with the
checkpoint's manifest rewritten to match (digests detect damage, they do not authenticate)."""

import io
import os
import pickle

import pytest
import torch

from dfgr_torchrec.training.manifest import write_manifest
from dfgr_torchrec.training.safe_dcp import SafePlanner, SafeReader, UnsafeCheckpoint
from tests.reliability.conftest import DEBUG, SMALL, clean_error, dfgr


class _Marker:
    """Unpickling this creates ``path`` (what an attacker's ``os.system`` would do, harmlessly)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _plant(run, marker, name):
    """Replaces ``name`` in every checkpoint of ``run`` by a hostile pickle and re-signs the manifests."""
    for folder in [*(run / "best").iterdir(), *(run / "checkpoints").iterdir()]:
        target = folder / name
        if name == ".metadata":  # the real metadata, with the hostile object riding along
            with open(target, "rb") as f:
                real = pickle.load(f)
            real.planner_data = {"x": _Marker(marker)}
            target.write_bytes(pickle.dumps(real))
        else:
            torch.save({"scheduler": _Marker(marker)}, target)
        write_manifest(str(folder))


COMMANDS = {
    "eval": lambda out: ("eval", "--config", DEBUG, f"output_dir={out}"),
    "resume": lambda out: (
        "train",
        "--config",
        DEBUG,
        "--resume",
        f"output_dir={out}",
        *SMALL[:-1],
        "train.max_steps=6",
    ),
    "export": lambda out: (
        "export",
        "--config",
        DEBUG,
        "--no-compile",
        "--out",
        str(out / "artifact"),
        f"output_dir={out}",
    ),
}
CASES = [
    (".metadata", "eval"),
    (".metadata", "resume"),
    (".metadata", "export"),
    ("extra.pt", "resume"),
    ("rng-rank0.pt", "resume"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, command", CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_a_hostile_checkpoint_is_refused_and_runs_nothing(run_copy, tmp_path, name, command):
    out, run = run_copy
    marker = tmp_path / "pwned"
    _plant(run, marker, name)
    result = dfgr(*COMMANDS[command](out))
    assert not marker.exists(), "code from the checkpoint ran"
    clean_error(result, "refused to load")


def test_the_safe_reader_reads_a_real_checkpoint_and_names_what_it_refuses(trained, tmp_path):
    run = trained[0] / "debug" / "checkpoints" / "step-4"
    assert (
        "model.embedding.collection.embeddings.item.weight" in SafeReader(str(run)).read_metadata().state_dict_metadata
    )
    copy = tmp_path / "ck"
    copy.mkdir()
    real = pickle.loads((run / ".metadata").read_bytes())
    real.planner_data = {"x": _Marker(tmp_path / "pwned")}
    (copy / ".metadata").write_bytes(pickle.dumps(real))
    with pytest.raises(UnsafeCheckpoint, match="refused to load: it references io.open"):
        SafeReader(str(copy)).read_metadata()
    assert not (tmp_path / "pwned").exists()


def test_a_hostile_non_tensor_entry_is_refused(tmp_path):
    """DCP's own planner loads non-tensor entries with ``weights_only=False``; ours does not."""
    buffer = io.BytesIO()
    torch.save(_Marker(tmp_path / "pwned"), buffer)
    buffer.seek(0)

    class Item:
        class dest_index:
            fqn = "optim.state.step"

    planner = SafePlanner()
    with pytest.raises(UnsafeCheckpoint, match="optim.state.step"):
        planner.load_bytes(Item, buffer)
    assert not (tmp_path / "pwned").exists()
    plain = io.BytesIO()
    torch.save({"step": 3, "lr": [0.1]}, plain)
    plain.seek(0)
    planner.flatten_state_dict, planner.state_dict = False, {}
    planner.load_bytes(Item, plain)
    assert planner.state_dict == {"optim.state.step": {"step": 3, "lr": [0.1]}}
    assert os.path.exists(tmp_path)
