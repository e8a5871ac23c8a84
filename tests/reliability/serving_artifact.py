"""A small exported artifact (no training: a seeded tiny model over the serving tests' data set) that
the artifact and request tests copy and damage, and a way to re-sign a damaged copy's manifest
(digests detect damage, they do not authenticate: whoever can write the folder can update them)."""

import json
import shutil

from dfgr_torchrec.config import MaskMode
from dfgr_torchrec.serving.export import _file_records, write_artifact
from dfgr_torchrec.serving.vocab import Vocabularies
from tests.serving.conftest import prepare_tiny
from tests.serving.test_ranker import HISTORY, _line, _model


class Marker:
    """Unpickling this creates ``path`` (what an attacker's ``os.system`` would do, harmlessly)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def build_artifact(tmp):
    """An exported artifact (SESSION masks: requests need timestamps) in ``tmp / "artifact"``."""
    vocabs = Vocabularies.from_prepared(prepare_tiny(tmp, vocab={"oov": "hash", "hash_buckets": 4}))
    return write_artifact(_model(vocabs, mode=MaskMode.SESSION), vocabs, str(tmp / "artifact"), compile=False)


def copy_of(artifact, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(artifact, out)
    return out


def resign(artifact, drop=()):
    """Rewrites ``artifact.json``'s file records to match the folder as it is now, without ``drop``."""
    path = artifact / "artifact.json"
    manifest = json.loads(path.read_text())
    records = {k: v for k, v in _file_records(str(artifact)).items() if k != "artifact.json" and k not in drop}
    manifest["files"] = records
    path.write_text(json.dumps(manifest, indent=2))
    return manifest


def good_line(user="a"):
    return _line(user, HISTORY)
