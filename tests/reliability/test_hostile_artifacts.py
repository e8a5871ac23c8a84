"""A serving artifact received from someone else is data, not code: ``Ranker.load`` / ``dfgr score``
refuse a ``scoring.pt2`` that ``torch.export.load`` would unpickle (a weight marked ``use_pickle``,
hostile sample inputs, an entry the exporter does not write), load the AOTInductor package only when
the caller opts in to native code and the manifest lists it, read only files the manifest lists, and
name the file of every damaged artifact in one line (exit 2, no traceback).

The hostile files are built here, with ``artifact.json`` re-signed to match."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from dfgr_torchrec.serving.ranker import Ranker
from tests.reliability.conftest import run
from tests.reliability.serving_artifact import Marker, build_artifact, copy_of, good_line, resign

WEIGHTS_CONFIG = "scoring/data/weights/model_weights_config.json"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return build_artifact(tmp_path_factory.mktemp("hostile-artifact"))


@pytest.fixture
def copy(artifact, tmp_path):
    return copy_of(artifact, tmp_path)


def _rewrite_program(artifact, change):
    """Rewrites ``scoring.pt2`` entry by entry: ``change(entries)`` edits the ``{name: bytes}`` dict."""
    path = artifact / "scoring.pt2"
    with zipfile.ZipFile(path) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    change(entries)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    resign(artifact)


def _pickled(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _pickled_weight(marker):
    def change(entries):
        config = json.loads(entries[WEIGHTS_CONFIG])
        meta = next(iter(config["config"].values()))
        meta["use_pickle"] = True
        entries[f"scoring/data/weights/{meta['path_name']}"] = _pickled(Marker(marker))
        entries[WEIGHTS_CONFIG] = json.dumps(config).encode()

    return change


def _pickled_sample_inputs(marker):
    def change(entries):
        entries["scoring/data/sample_inputs/model.pt"] = _pickled(((Marker(marker),), {}))

    return change


def _extra_entry(marker):
    def change(entries):
        entries["scoring/extra/notes.bin"] = b"anything"

    return change


HOSTILE = {
    "use_pickle weight": (_pickled_weight, "use_pickle"),
    "pickled sample inputs": (_pickled_sample_inputs, "sample_inputs/model.pt"),
    "unexpected entry": (_extra_entry, "scoring/extra/notes.bin"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_exported_program_is_refused_and_runs_nothing(copy, tmp_path, case):
    build, entry = HOSTILE[case]
    marker = tmp_path / "pwned"
    _rewrite_program(copy, build(marker))
    with pytest.raises(ValueError, match="refused to load") as error:
        Ranker.load(str(copy))
    assert not marker.exists(), "code from the artifact ran"
    assert "scoring.pt2" in str(error.value) and entry in str(error.value) and "\n" not in str(error.value)


def test_dfgr_score_refuses_a_hostile_program_in_one_line(copy, tmp_path, capsys):
    marker = tmp_path / "pwned"
    _rewrite_program(copy, _pickled_weight(marker))
    (tmp_path / "req.jsonl").write_text(good_line() + "\n")
    code, out, err = run(
        capsys, "score", "--model", copy, "--input", tmp_path / "req.jsonl", "--output", tmp_path / "s.jsonl"
    )
    assert not marker.exists()
    assert code == 2 and "scoring.pt2" in err and "use_pickle" in err and len(err.strip().splitlines()) == 1


def test_the_exporter_writes_only_entries_the_loader_accepts(artifact):
    with zipfile.ZipFile(f"{artifact}/scoring.pt2") as z:
        config = json.loads(z.read(WEIGHTS_CONFIG))["config"]
    assert config and all(meta["use_pickle"] is False for meta in config.values())
    from dfgr_torchrec.serving.trust import check_program

    check_program(f"{artifact}/scoring.pt2")  # what export writes passes the loader's check


@pytest.mark.parametrize(
    "allow_native, listed, loaded", [(False, True, False), (True, False, False), (True, True, True)]
)
def test_the_aoti_package_loads_only_when_native_code_is_allowed_and_listed(
    copy, monkeypatch, allow_native, listed, loaded
):
    """The package is a shared library: the default serves the exported program instead."""
    (copy / "scoring_aoti.pt2").write_bytes(b"a shared library would run here")
    resign(copy, drop=() if listed else ("scoring_aoti.pt2",))
    calls = []
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda path: calls.append(path) or (lambda *a: None))
    Ranker.load(str(copy), allow_native=allow_native)
    assert bool(calls) == loaded


@pytest.mark.parametrize(
    "name",
    ["weights.pt", "vocab/vocab_item.npy", "vocab/vocab_category.json", "vocab/vocabularies.json", "scoring.pt2"],
)
def test_a_file_the_manifest_does_not_list_is_refused(copy, name):
    resign(copy, drop=(name,))
    with pytest.raises(ValueError) as error:
        Ranker.load(str(copy))
    message = str(error.value)
    assert "artifact.json" in message and name in message and "no entry" in message


def _truncate_weights(artifact):
    data = (artifact / "weights.pt").read_bytes()
    (artifact / "weights.pt").write_bytes(data[: len(data) // 2])
    resign(artifact)


def _garbage_after_manifest(artifact):
    with open(artifact / "artifact.json", "a") as f:
        f.write("\n}garbage\n")


def _no_files_key(artifact):
    manifest = json.loads((artifact / "artifact.json").read_text())
    del manifest["files"]
    (artifact / "artifact.json").write_text(json.dumps(manifest))


def _more_layers(artifact):
    manifest = json.loads((artifact / "artifact.json").read_text())
    manifest["model"]["interaction"]["num_layers"] += 1
    (artifact / "artifact.json").write_text(json.dumps(manifest))


def _object_vocabulary(artifact):
    np.save(
        artifact / "vocab" / "vocab_item.npy",
        np.array([Marker(artifact / "pwned"), "x"], dtype=object),
        allow_pickle=True,
    )
    resign(artifact)


POOR = {
    "truncated weights": (_truncate_weights, ["weights.pt", "not a readable state_dict"]),
    "garbage after the manifest": (_garbage_after_manifest, ["artifact.json", "line "]),
    "no files key": (_no_files_key, ["artifact.json", "'files'"]),
    "changed num_layers": (_more_layers, ["weights.pt", "missing from the file", "'"]),
    "object-dtype vocabulary": (_object_vocabulary, ["vocab_item.npy", "not a plain array"]),
}


@pytest.mark.parametrize("case", list(POOR))
def test_a_damaged_artifact_is_one_line_naming_the_file(copy, tmp_path, capsys, case):
    damage, words = POOR[case]
    damage(copy)
    (tmp_path / "req.jsonl").write_text(good_line() + "\n")
    code, out, err = run(
        capsys, "score", "--model", copy, "--input", tmp_path / "req.jsonl", "--output", tmp_path / "s.jsonl"
    )
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    assert not (copy / "pwned").exists()
