"""One request cannot exhaust memory or lose the batch: each is bounded before it is parsed or padded
(line bytes, id length, candidates, history; ``dfgr score`` flags and ``Ranker.load`` args), ids are
looked up one by one (never padded to the longest), and every bad line (a timestamp beyond int64,
10^5 nested brackets, a non-UTF-8 byte, times that go backwards) is an error of its line only while
the other lines are scored; an unwritable ``--output`` is refused before anything is scored."""

import json
import tracemalloc

import numpy as np
import pytest

from dfgr_torchrec.serving.ranker import Ranker
from dfgr_torchrec.serving.vocab import Vocabulary
from tests.reliability.conftest import run
from tests.reliability.serving_artifact import build_artifact, good_line
from tests.serving.test_ranker import CANDIDATES, HISTORY, _candidate, _interaction


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return build_artifact(tmp_path_factory.mktemp("bounds-artifact"))


def _request(history=HISTORY, candidates=CANDIDATES, user="a"):
    return json.dumps({"user": user, "history": history, "candidates": candidates})


def _scored_around(ranker, bad):
    """Scores ``good, bad, good``: the bad line's one error (line 2) and the two good results."""
    results, errors = ranker.score_lines([good_line("a"), bad, good_line("b")])
    assert [r["line"] for r in results] == [1, 3], errors
    assert [e.line for e in errors] == [2] and "\n" not in str(errors[0])
    return str(errors[0])


LIMITS = {
    "line bytes": (dict(line_bytes=2000), _request(HISTORY * 20), "--max-line-bytes"),
    "id length": (dict(id_chars=64), _request(candidates=[_candidate("i" * 65, 9)]), "--max-id-chars"),
    "candidates": (dict(candidates=3), _request(candidates=CANDIDATES * 2), "--max-candidates"),
    "history": (dict(history=5), _request([_interaction("x", 0)] + HISTORY), "--max-history"),
}


@pytest.mark.parametrize("case", list(LIMITS))
def test_each_limit_is_an_error_of_its_line_and_the_rest_is_scored(artifact, case):
    from dfgr_torchrec.serving.limits import RequestLimits

    limits, bad, flag = LIMITS[case]
    ranker = Ranker.load(artifact, compiled=False, limits=RequestLimits(**limits))
    message = _scored_around(ranker, bad)
    assert flag in message and "the limit of" in message


def test_default_limits_match_the_compiled_graph():
    from dfgr_torchrec.serving.compile import MAX_CANDIDATES
    from dfgr_torchrec.serving.limits import RequestLimits

    defaults = RequestLimits()
    assert (defaults.line_bytes, defaults.id_chars, defaults.candidates) == (1 << 20, 256, MAX_CANDIDATES)
    assert MAX_CANDIDATES == 65536
    with pytest.raises(ValueError, match="--max-history"):
        RequestLimits(history=0)


def test_ids_are_never_padded_to_the_longest():
    vocab = Vocabulary("item", np.array(["a", "b", "c"]))
    ids = ["b"] * 300 + ["x" * 100_000]  # a fixed-width array of these would take 120 MB
    tracemalloc.start()
    rows, unknown = vocab.rows(ids)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 << 20, f"{peak / 2**20:.0f} MiB"
    assert rows[:300].tolist() == [2] * 300 and unknown == 1
    assert Vocabulary("n", np.array([3, 7])).rows(["7", 3, "7.0", "x"])[0].tolist() == [2, 1, 0, 0]


BAD_LINES = {
    "timestamp beyond int64": (_request(candidates=[_candidate("y", 2**70)]), "beyond int64"),
    "nested brackets": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "candidates before the history": (_request(candidates=[_candidate("y", 3)]), "expected non-decreasing"),
    "unsorted history": (_request([_interaction("x", 5, click=1), _interaction("y", 2)]), "expected non-decreasing"),
    "not UTF-8": (b'{"user": "\xff"}', "not UTF-8"),
}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_bad_line_is_an_error_of_its_line_and_the_rest_is_scored(artifact, case, compiled):
    bad, words = BAD_LINES[case]
    assert words in _scored_around(Ranker.load(artifact, compiled=compiled), bad)


def test_parsed_requests_are_accepted_and_anything_else_is_a_line_error(artifact):
    ranker = Ranker.load(artifact, compiled=False)
    from_text, _ = ranker.score_lines([good_line()])
    results, errors = ranker.score_lines([json.loads(good_line()), 7])
    assert results[0]["scores"] == from_text[0]["scores"]
    assert [e.line for e in errors] == [2] and "expected a JSONL line" in str(errors[0])


def test_dfgr_score_reports_bad_lines_by_number_and_scores_the_rest(artifact, tmp_path, capsys):
    lines = [
        good_line("a").encode(),
        b'{"user": "b\xff"}',
        b"[" * 100_000,
        good_line("c").encode() * 300,
        _request(candidates=[_candidate("y", 2**70)]).encode(),
        good_line("d").encode(),
    ]
    (tmp_path / "req.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = run(
        capsys,
        "score",
        "--model",
        artifact,
        "--input",
        tmp_path / "req.jsonl",
        "--output",
        tmp_path / "s.jsonl",
        "--max-line-bytes",
        150_000,
    )
    assert code == 2, err
    for line, words in [(2, "not UTF-8"), (3, "nested too deeply"), (4, "--max-line-bytes"), (5, "beyond int64")]:
        assert f"line {line}: " in out and words in out.split(f"line {line}: ")[1].splitlines()[0], (line, out)
    assert [json.loads(x)["line"] for x in (tmp_path / "s.jsonl").read_text().splitlines()] == [1, 6]
    assert "4 of 6 requests rejected" in err


def test_an_unwritable_output_is_refused_before_any_request_is_scored(artifact, tmp_path, capsys, monkeypatch):
    (tmp_path / "req.jsonl").write_text(good_line() + "\n")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(Ranker, "score_lines", lambda *a: pytest.fail("scored before --output was checked"))
    code, out, err = run(
        capsys,
        "score",
        "--model",
        artifact,
        "--input",
        tmp_path / "req.jsonl",
        "--output",
        tmp_path / "a-file" / "s.jsonl",
    )
    assert code == 2 and "--output" in err and "cannot be written" in err and len(err.strip().splitlines()) == 1


def test_more_candidates_than_the_compiled_graph_takes_are_refused_or_scored_eagerly(artifact):
    """The default limit is the graph's bound; a caller who raises it gets the eager path, not a guard error."""
    from dfgr_torchrec.serving.limits import RequestLimits

    request = json.loads(good_line())
    request["candidates"] = [_candidate("y", 9)] * 65_537
    results, errors = Ranker.load(artifact).score_lines([request])
    assert not results and "--max-candidates" in str(errors[0])
    results, errors = Ranker.load(artifact, limits=RequestLimits(candidates=70_000)).score_lines([request])
    assert not errors and len(results[0]["scores"]) == 65_537
