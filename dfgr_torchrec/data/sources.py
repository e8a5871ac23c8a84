"""Data sets the package can fetch or make: ``source.download: <name>`` in a data YAML, or
``dfgr data download <name>``. Public logs are downloaded; ``synth-demo`` is generated
(deterministically, by ``dfgr data synth``'s planted model) so the demo needs no network.

Each entry is a function that writes the data set into a folder (imported only when called,
so reading a config never imports a downloader) and the folder it goes to by default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Optional

from dfgr_torchrec.config import check

if TYPE_CHECKING:
    from dfgr_torchrec.data.config import DataConfig

Fetch = Callable[[str, bool], str]  # (out_dir, force) -> out_dir


@dataclass(frozen=True)
class Download:
    """How to fetch one data set: ``fetch(out_dir, force)`` and the default ``out_dir``."""

    fetch: Fetch
    default_dir: str


def _movielens_1m(out_dir: str, force: bool) -> str:
    from dfgr_torchrec.data.movielens import download_movielens_1m

    return download_movielens_1m(out_dir, force=force)


def _movielens_1m_1k(out_dir: str, force: bool) -> str:
    from dfgr_torchrec.data.movielens import slice_movielens_1m

    return slice_movielens_1m(out_dir, force=force)


SYNTH_DEMO = {"num_users": 2000, "num_items": 5000, "min_seq_len": 10, "max_seq_len": 128, "seed": 0}


# the demo's log with planted repeats: a repeated item makes "buy" (the last type) far more likely
SYNTH_REPEAT = {**SYNTH_DEMO, "action_types": ["view", "cart", "buy"], "repeat_prob": 0.3}


def _synth(settings: dict, out_dir: str, force: bool) -> str:
    from dfgr_torchrec.data.atomic import atomic_directory
    from dfgr_torchrec.data.synth_log import SynthConfig, generate

    if os.path.exists(os.path.join(out_dir, "events.tsv")) and not force:
        return out_dir
    with atomic_directory(out_dir) as tmp:
        generate(SynthConfig(**settings), os.path.join(tmp, "events.tsv"), progress=False)
    return out_dir


def _synth_demo(out_dir: str, force: bool) -> str:
    """``events.tsv``: 2,000 users, 5,000 items, about 70k rows (click, like, share), in ~3 s."""
    return _synth(SYNTH_DEMO, out_dir, force)


def _synth_repeat(out_dir: str, force: bool) -> str:
    """``events.tsv``: the demo's users and items with planted repeats (view, cart, buy)."""
    return _synth(SYNTH_REPEAT, out_dir, force)


DOWNLOADS: Dict[str, Download] = {
    "movielens-1m": Download(_movielens_1m, "data/raw/movielens-1m"),
    "movielens-1m-1k": Download(_movielens_1m_1k, "data/raw/movielens-1m-1k"),
    "synth-demo": Download(_synth_demo, "data/raw/synth-demo"),
    "synth-repeat": Download(_synth_repeat, "data/raw/synth-repeat"),
}


def check_download_name(name: Optional[str], key: str = "source.download") -> None:
    """Raises ``ValueError`` naming ``key`` and the known names unless ``name`` is None or registered."""
    check(name is None or name in DOWNLOADS, key, f"one of {sorted(DOWNLOADS)}", name)


def download(name: str, out_dir: Optional[str] = None, force: bool = False) -> str:
    """Downloads data set ``name`` into ``out_dir`` (default: its registered folder); returns the folder."""
    check_download_name(name)
    entry = DOWNLOADS[name]
    return entry.fetch(out_dir or entry.default_dir, force)


def ensure_source(config: "DataConfig") -> None:
    """Makes sure ``config.source.path`` exists, downloading ``config.source.download`` into its
    folder when it does not."""
    from dfgr_torchrec.data.config import source_files, source_present

    path, name = config.source.path, config.source.download
    if source_present(path):
        return
    if name is None:
        if os.path.exists(path):
            source_files(path)  # a folder without log files: says so
        raise FileNotFoundError(
            f"{path}: no such file, and data config {config.name!r} has no `source.download` to fetch it"
        )
    out_dir = os.path.dirname(path) or "."
    download(name, out_dir)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: still missing after downloading {name!r} into {out_dir}")
