"""Public data sets the package can download: ``source.download: <name>`` in a data YAML, or
``dfgr data download <name>``.

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


DOWNLOADS: Dict[str, Download] = {
    "movielens-1m": Download(_movielens_1m, "data/raw/movielens-1m"),
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
    path, name = config.source.path, config.source.download
    if os.path.exists(path):
        return
    if name is None:
        raise FileNotFoundError(f"{path}: no such file, and data config {config.name!r} has no `source.download` to fetch it")
    out_dir = os.path.dirname(path) or "."
    download(name, out_dir)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: still missing after downloading {name!r} into {out_dir}")
