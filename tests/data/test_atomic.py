import os

import pytest

from dfgr_torchrec.data.atomic import atomic_directory


def test_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "set"
    with atomic_directory(str(out)) as tmp:
        open(os.path.join(tmp, "a"), "w").write("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_directory(str(out)) as tmp:
            open(os.path.join(tmp, "a"), "w").write("2")
            raise RuntimeError("crash mid-write")
    assert (out / "a").read_text() == "1"  # the old complete copy is untouched
    assert sorted(os.listdir(tmp_path)) == ["set"]  # no temporary folder left behind
