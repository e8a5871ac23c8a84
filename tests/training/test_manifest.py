import hashlib
import json

from dfgr_torchrec.training.manifest import MANIFEST, checkpoint_problem, write_manifest


def _checkpoint(tmp_path):
    step = tmp_path / "step-3"
    step.mkdir()
    (step / ".metadata").write_bytes(b"meta")
    (step / "__0_0.distcp").write_bytes(b"x" * 1000)
    return step


def test_an_intact_checkpoint_passes_and_a_changed_byte_is_named(tmp_path):
    step = _checkpoint(tmp_path)
    write_manifest(str(step))
    assert checkpoint_problem(str(step)) is None
    (step / "__0_0.distcp").write_bytes(b"y" + b"x" * 999)
    assert "__0_0.distcp does not match its checksum" in checkpoint_problem(str(step))


def test_manifests_with_the_older_256_bit_digests_still_verify(tmp_path):
    """Checkpoints written before the digest became 128-bit must not read as damaged."""
    step = _checkpoint(tmp_path)
    files = {
        name: {
            "size": (step / name).stat().st_size,
            "blake2b": hashlib.blake2b((step / name).read_bytes(), digest_size=32).hexdigest(),
        }
        for name in (".metadata", "__0_0.distcp")
    }
    (step / MANIFEST).write_text(json.dumps({"files": files}))
    assert checkpoint_problem(str(step)) is None
    (step / ".metadata").write_bytes(b"mETA")
    assert ".metadata does not match" in checkpoint_problem(str(step))
