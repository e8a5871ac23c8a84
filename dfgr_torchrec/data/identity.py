"""Which prepared data a run was trained on, so its weights are never read against other vocabularies.

A table row means "the id at ``vocab[row - 1]`` of the prepared copy it was trained on". Prepare
the same log again with other code (a format change, ids that now sort as integers) and the
same row can mean another id while every table keeps its size: a checkpoint would load without
complaint and score the wrong items. So a run records, in ``<run>/prepared.json``, the prepared
folder and the blake2b of each of its vocabularies (from that folder's ``meta.json``); resuming,
evaluating and exporting compare them with the copy they would use, and take the recorded folder
when it is still intact and the current one differs, or stop with a clear error.

Example::

    record_prepared("runs/demo", data.path)                 # at the start of a fresh run
    path = prepared_for_run("runs/demo", current_path)      # resume, eval, export
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, Optional

from dfgr_torchrec.data.atomic import atomic_file

RECORD = "prepared.json"


class PreparedDataChanged(ValueError):
    """The run's weights were trained on vocabularies that the prepared data at hand no longer has."""


def vocab_digests(path: str) -> Dict[str, str]:
    """``{vocab_<name>.npy: blake2b}`` of a prepared folder, read from its ``meta.json``."""
    with open(os.path.join(path, "meta.json")) as f:
        arrays = json.load(f)["arrays"]
    return {name: entry["blake2b"] for name, entry in sorted(arrays.items()) if name.startswith("vocab_")}


def record_prepared(run_dir: str, path: str) -> None:
    """Writes ``<run_dir>/prepared.json`` for the prepared folder ``path``."""
    with atomic_file(os.path.join(run_dir, RECORD)) as tmp:
        with open(tmp, "w") as f:
            json.dump({"path": os.path.abspath(path), "vocab": vocab_digests(path)}, f, indent=2)


def _recorded(run_dir: str) -> Optional[Dict[str, object]]:
    try:
        with open(os.path.join(run_dir, RECORD)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def prepared_for_run(run_dir: str, path: str) -> str:
    """The prepared folder to read the run's weights with: ``path`` when its vocabularies are the
    ones the run recorded (or the run recorded none: older runs), else the recorded folder when it
    is still intact and unchanged. Raises :class:`PreparedDataChanged` otherwise."""
    from dfgr_torchrec.data.prepare import check_prepared

    record = _recorded(run_dir)
    if record is None or vocab_digests(path) == record["vocab"]:
        return path
    old = str(record["path"])
    damage = check_prepared(old) if os.path.isdir(old) else "gone"
    if damage is None and vocab_digests(old) != record["vocab"]:
        damage = "prepared again since"
    if damage is None:
        if os.path.abspath(old) != os.path.abspath(path):
            print(
                f"{run_dir}: using {old}, the prepared data it was trained on ({path} has other vocabularies)",
                file=sys.stderr,
            )
        return old
    now = vocab_digests(path)
    changed = sorted(n for n in set(record["vocab"]) | set(now) if record["vocab"].get(n) != now.get(n))
    raise PreparedDataChanged(
        f"{os.path.join(run_dir, RECORD)}: this run was trained on {old} (now unusable: {damage}), and the "
        f"prepared data at hand ({path}) has other vocabularies ({', '.join(changed)}): its table rows would "
        f"stand for other ids. Train the run again (train.overwrite=true), or prepare the data as it was then"
    )
