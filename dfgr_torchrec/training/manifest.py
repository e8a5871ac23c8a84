"""Checkpoint manifests: the size and blake2b of every file, written before a checkpoint gets its
final name and checked before it is loaded (no torch: the check runs before anything is set up)."""

from __future__ import annotations

import json
import os
import re
from typing import Callable, Dict, List, Optional

from dfgr_torchrec.data.atomic import file_digest
from dfgr_torchrec.errors import RunError

MANIFEST = "manifest.json"
_NAME = re.compile(r"^step-(\d+)$")


def _files(folder: str) -> List[str]:
    out = []
    for root, _, names in os.walk(folder):
        out += [os.path.relpath(os.path.join(root, n), folder) for n in names]
    return sorted(f for f in out if f != MANIFEST)


def write_manifest(folder: str) -> str:
    """``<folder>/manifest.json``: ``{relative path: {"size", "blake2b"}}`` of every file in it."""
    files = {
        name: {"size": os.path.getsize(os.path.join(folder, name)), "blake2b": file_digest(os.path.join(folder, name))}
        for name in _files(folder)
    }
    path = os.path.join(folder, MANIFEST)
    with open(path, "w") as f:
        json.dump({"files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    return path


def checkpoint_problem(folder: str) -> Optional[str]:
    """What is wrong with a checkpoint folder (naming the file), or None if it matches its manifest."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path) as f:
            files: Dict[str, Dict[str, object]] = json.load(f)["files"]
    except FileNotFoundError:
        return f"{path} is missing (the checkpoint was not finished, or was damaged)"
    except (ValueError, KeyError, TypeError) as e:
        return f"{path} is unreadable ({e})"
    for name, expected in files.items():
        file = os.path.join(folder, name)
        if not os.path.isfile(file):
            return f"{file} is missing"
        size = os.path.getsize(file)
        if size != expected["size"]:
            return f"{file} has {size} bytes, the manifest says {expected['size']} (truncated or damaged)"
        recorded = str(expected["blake2b"])  # checkpoints written before 13f9b7d record 256-bit digests
        if file_digest(file, digest_size=len(recorded) // 2) != recorded:
            return f"{file} does not match its checksum in {path} (damaged)"
    return None


def checkpoints_newest_first(directory: str) -> List[str]:
    if not os.path.isdir(directory):
        return []
    steps = sorted(((int(m.group(1)), n) for n in os.listdir(directory) if (m := _NAME.match(n))), reverse=True)
    return [os.path.join(directory, name) for _, name in steps]


def newest_intact_checkpoint(directory: str, say: Callable[[str], None] = print) -> Optional[str]:
    """The newest checkpoint of ``directory`` that matches its manifest (None if there is none at all).

    A damaged one is skipped with a message naming the bad file; if every one is damaged, a
    :class:`RunError` lists them.
    """
    damaged = []
    for folder in checkpoints_newest_first(directory):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        damaged.append(problem)
        say(f"checkpoint {folder} is damaged: {problem}; trying the previous one")
    if damaged:
        raise RunError(f"no intact checkpoint in {directory}: " + "; ".join(damaged))
    return None
