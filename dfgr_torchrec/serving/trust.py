"""What a serving artifact may hold, checked before anything of it is loaded.

An artifact is data, never code: its ``artifact.json`` must list every file the :class:`Ranker`
reads (weights, every vocabulary file, the exported program), each file must have its recorded size
and blake2b digest (they detect damage; anyone who can write the folder can update them, so they do
not authenticate), and the exported program (``scoring.pt2``) may hold only JSON and raw tensor
bytes: ``torch.export.load`` unpickles (``weights_only=False``) any weight or constant its configs
mark ``use_pickle``, any custom or opaque object, and sample inputs that plain tensors cannot hold,
so :func:`check_program` refuses such a package before ``torch.export.load`` sees it.

Example::

    manifest = read_manifest("artifacts/dfgr-movielens")   # ValueError naming the file otherwise
    check_program("artifacts/dfgr-movielens/scoring.pt2")
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from typing import Any, Dict, List

import torch

from dfgr_torchrec.data.atomic import file_digest

FORMAT_VERSION = 1
ARTIFACT_FILE = "artifact.json"
WEIGHTS_FILE = "weights.pt"
VOCAB_DIR = "vocab"
VOCAB_INDEX = "vocabularies.json"
PROGRAM_FILE = "scoring.pt2"  # torch.export.save of the ExportedProgram
PACKAGE_FILE = "scoring_aoti.pt2"  # the AOTInductor package of the same program (a shared library)
MANIFEST_KEYS = ("format", "model", "tables", "needs_timestamps", "files")
RUN_ARTIFACT = "artifact"  # where `dfgr export --run DIR` writes by default: DIR/artifact

# what torch.export.save writes for one program named "model" (torch 2.13), below the archive root
_PROGRAM_ENTRIES = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|models/model\.json"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+|data/sample_inputs/model\.pt"
)
_CONFIGS = {
    "data/weights/model_weights_config.json": "weight_",
    "data/constants/model_constants_config.json": "tensor_",
}


def check_program(path: str) -> None:
    """Refuses (``ValueError`` naming ``path`` and the entry) a ``torch.export`` package that would
    unpickle anything: an entry type torch's exporter does not write for plain tensors, a weight or
    constant marked ``use_pickle``, or sample inputs that ``torch.load(weights_only=True)`` refuses."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            root = names[0].split("/", 1)[0] if names else ""
            if len(set(names)) != len(names):
                raise ValueError(f"{path}: duplicate entries in the package; refused to load it")
            for name in names:
                inner = name[len(root) + 1 :] if name.startswith(root + "/") else None
                if inner is None or not _PROGRAM_ENTRIES.fullmatch(inner):
                    raise ValueError(f"{path}: entry {name!r} is not one `dfgr export` writes; refused to load it")
                if inner in _CONFIGS:
                    _check_config(path, name, archive.read(name), _CONFIGS[inner])
                elif inner.startswith("data/sample_inputs/"):
                    _check_tensors(path, name, archive.read(name))
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable torch.export package ({e}); export again") from None


def _check_config(path: str, name: str, data: bytes, prefix: str) -> None:
    try:
        config = json.loads(data)["config"]
        entries = list(config.items())
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f"{path}: entry {name!r} is not a weights/constants config; refused to load it") from None
    for fqn, meta in entries:
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise ValueError(
                f"{path}: entry {name!r} marks {fqn!r} use_pickle (it would be unpickled, "
                "which can run code); refused to load it"
            )
        if not re.fullmatch(re.escape(prefix) + r"\d+", str(meta.get("path_name"))):
            raise ValueError(
                f"{path}: entry {name!r}: {fqn!r} is stored as {meta.get('path_name')!r}, "
                f"not a raw tensor ({prefix}N); refused to load it"
            )


def _check_tensors(path: str, name: str, data: bytes) -> None:
    """torch's deserializer retries sample inputs with ``weights_only=False``: they must load without it."""
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as e:  # an unpickling error, a damaged zip: either way it is not plain tensors
        raise ValueError(
            f"{path}: entry {name!r} needs more than plain tensors (torch.load(weights_only=True): "
            f"{type(e).__name__}); refused to load it"
        ) from None


def artifact_dir(path: str) -> str:
    """``path`` when it is an artifact, else the one ``dfgr export --run`` wrote into the run
    directory ``path`` (``<path>/artifact``); a run directory without one is an error saying so."""
    inside = os.path.join(path, RUN_ARTIFACT)
    if os.path.isfile(os.path.join(path, ARTIFACT_FILE)) or not os.path.isdir(path):
        return path
    if os.path.isfile(os.path.join(inside, ARTIFACT_FILE)):
        return inside
    if os.path.isfile(os.path.join(path, "config.yaml")):  # a run directory (recipes.args.RUN_CONFIG)
        raise FileNotFoundError(
            f"{path}: a run directory with no exported artifact ({inside}); run `dfgr export --run {path}` first"
        )
    return path  # read_manifest names what is missing


def read_manifest(directory: str, program: bool = True) -> Dict[str, Any]:
    """``artifact.json``, after checking its format, that it lists every file the :class:`Ranker`
    reads (``program``: the exported program too), that each has its recorded size and digest, and
    that a listed exported program unpickles nothing (:func:`check_program`; a hostile artifact is
    refused whole, even when its program would not be served)."""
    path = os.path.join(directory, ARTIFACT_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{directory}: not a serving artifact (no {ARTIFACT_FILE}); write one with `dfgr export`"
        )
    manifest = _read_json(path)
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(manifest).__name__}; export again")
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise ValueError(
            f"{path}: missing key(s) {missing}; an artifact written by `dfgr export` has {list(MANIFEST_KEYS)}"
        )
    if manifest["format"] != FORMAT_VERSION:
        raise ValueError(f"{path}: artifact format {manifest['format']!r}, this version reads {FORMAT_VERSION}")
    files = manifest["files"]
    if not isinstance(files, dict) or not all(
        isinstance(r, dict) and {"bytes", "blake2b"} <= set(r) for r in files.values()
    ):
        raise ValueError(f'{path}: files: expected {{name: {{"bytes", "blake2b"}}}}; export again')
    for name, record in files.items():
        file = os.path.join(directory, name)
        if (
            not os.path.isfile(file)
            or os.path.getsize(file) != record["bytes"]
            or file_digest(file) != record["blake2b"]
        ):
            raise ValueError(
                f"{file}: missing or changed since export (size/digest differ from {ARTIFACT_FILE}); export again"
            )
    needed = [WEIGHTS_FILE, *vocabulary_files(directory, files), *([PROGRAM_FILE] if program else [])]
    unlisted = [name for name in needed if name not in files]
    if unlisted:
        raise ValueError(
            f"{path}: no entry for {unlisted[0]} in files (every file an artifact needs is listed "
            "and verified); export again"
        )
    if PROGRAM_FILE in files:
        check_program(os.path.join(directory, PROGRAM_FILE))
    return manifest


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno}: invalid JSON ({e.msg} at column {e.colno}); export again") from None
    except (UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not a JSON manifest ({type(e).__name__}); export again") from None


def vocabulary_files(directory: str, files: Dict[str, Any]) -> List[str]:
    """The files of ``vocab/`` the artifact needs: its index, then each vocabulary's ids and policy
    (the index is read only once it is listed and verified)."""
    index = f"{VOCAB_DIR}/{VOCAB_INDEX}"
    if index not in files:
        return [index]
    info = _read_json(os.path.join(directory, index))
    try:
        names = ["item", "user", *[str(n) for n in info["side"]], *(["action"] if info["action"] else [])]
    except (KeyError, TypeError):
        raise ValueError(
            f'{os.path.join(directory, index)}: expected {{"tasks", "side", "action"}}; export again'
        ) from None
    return [index, *[f"{VOCAB_DIR}/vocab_{n}.{ext}" for n in names for ext in ("npy", "json")]]


def load_state(model: torch.nn.Module, path: str) -> None:
    """Loads ``weights.pt`` into ``model`` with ``weights_only=True``; a damaged file or one that does
    not match the model built from ``artifact.json`` is a ``ValueError`` naming the file and a key."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # a truncated zip, an unpickling refusal: one line, the file named
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ValueError(f"{path}: not a readable state_dict ({type(e).__name__}: {reason}); export again") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}; export again")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        key, where = (missing[0], "missing from the file") if missing else (unexpected[0], "not in the model")
        raise ValueError(
            f"{path}: does not match the model of {ARTIFACT_FILE}: {key!r} {where} "
            f"({len(missing)} missing, {len(unexpected)} unexpected); export again"
        )
    for key, tensor in own.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"{path}: {key!r} is {shape}, the model of {ARTIFACT_FILE} has {tuple(tensor.shape)}; export again"
            )
    model.load_state_dict(state, strict=True)
