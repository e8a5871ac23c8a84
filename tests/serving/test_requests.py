import json

import pytest

from dfgr_torchrec.config import RankingModelConfig
from dfgr_torchrec.serving.requests import (
    RequestError,
    RequestSchema,
    encode_request,
    needs_timestamps,
    parse_request,
    parse_requests,
    read_requests,
)
from dfgr_torchrec.serving.vocab import Vocabularies

GOOD = {
    "user": "b",
    "history": [
        {"item": "x", "category": "c1", "actions": {"click": 1, "like": 1}, "timestamp": 1},
        {"item": "nope", "category": "c1", "actions": {"like": 1}, "timestamp": 2},
    ],
    "candidates": [{"item": "y", "category": "c2", "timestamp": 3}, {"item": "x", "category": "c-new", "timestamp": 3}],
}
SCHEMA = RequestSchema(side=["category"], tasks=["click", "like"])


def _line(**changes):
    return json.dumps({**GOOD, **changes})


def test_good_request_encodes_to_prepared_rows(hashed):
    vocabs = Vocabularies.from_prepared(hashed)
    encoded = encode_request(parse_request(_line(), 1, SCHEMA), vocabs)
    x, y = (int(vocabs.item.rows([i])[0][0]) for i in ("x", "y"))
    assert encoded.history_items.tolist()[0] == x and encoded.candidate_items.tolist() == [y, x]
    assert encoded.history_actions.tolist() == [3, 2]
    assert encoded.history_timestamps.tolist() == [1, 2] and encoded.candidate_timestamps.tolist() == [3, 3]
    assert encoded.user.tolist() == [2]
    assert encoded.history_side["category"].tolist() == vocabs.side["category"].rows(["c1", "c1"])[0].tolist()
    assert encoded.unknown == {"user": 0, "item": 1, "category": 1}
    assert encoded.history_items.dtype == encoded.candidate_side["category"].dtype == encoded.user.dtype


def test_without_user_the_row_is_zero(hashed):
    body = {k: v for k, v in GOOD.items() if k != "user"}
    encoded = encode_request(parse_request(json.dumps(body), 1, SCHEMA), Vocabularies.from_prepared(hashed))
    assert encoded.user.tolist() == [0]


BAD = [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (_line(candidates=[]), "candidates: empty"),
    (_line(candidates="x"), "candidates: expected a list"),
    (
        _line(
            history=[
                {"item": "x", "category": "c1", "actions": {"like": 1}, "timestamp": 5},
                {"item": "y", "category": "c1", "actions": {"like": 1}, "timestamp": 4},
            ]
        ),
        r"history\[1\].timestamp: 4 is before",
    ),
    (
        _line(history=[{"item": "x", "category": "c1", "actions": {"lik": 1}, "timestamp": 1}]),
        r"history\[0\].actions: unknown task name\(s\) \['lik'\]; the known tasks are \['click', 'like'\]",
    ),
    (
        _line(history=[{"item": "x", "category": "c1", "actions": {"like": 1}, "timestamp": "1"}]),
        r"history\[0\].timestamp: expected an integer",
    ),
    (_line(history=[{"item": "x", "category": "c1", "actions": {"like": 1}}]), r"history\[0\].timestamp: missing"),
    (
        _line(candidates=[{"item": "x", "timestamp": 1}]),
        r"candidates\[0\]: missing item side feature\(s\) \['category'\]",
    ),
    (_line(candidates=[{"item": 1.5, "category": "c1", "timestamp": 1}]), r"candidates\[0\].item: expected an id"),
    (
        _line(candidates=[{"item": "x", "category": "c1", "timestamp": 1, "colour": "red"}]),
        r"unexpected key\(s\) \['colour'\]",
    ),
    (
        _line(history=[{"item": "x", "category": "c1", "actions": {"like": 2}, "timestamp": 1}]),
        "actions.like: expected 0 or 1",
    ),
    (_line(history=[{"item": "x", "category": "c1", "timestamp": 1}]), r"history\[0\].actions: expected an object"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_lines_say_what_was_expected(text, message):
    with pytest.raises(RequestError, match=message) as info:
        parse_request(text, 7, SCHEMA)
    assert info.value.line == 7 and str(info.value).startswith("line 7: ")


def test_errors_carry_their_line_numbers_and_the_rest_parse():
    lines = [_line(), "", BAD[0][0], _line(), BAD[2][0], _line()]
    requests, errors = parse_requests(lines, SCHEMA)
    assert [r.line for r in requests] == [1, 4, 6]
    assert [e.line for e in errors] == [3, 5]


def test_read_requests_file(hashed, tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join([_line(), BAD[5][0], _line(user=None)]) + "\n")
    encoded, errors = read_requests(str(path), Vocabularies.from_prepared(hashed))
    assert [e.line for e in encoded] == [1, 3] and [e.line for e in errors] == [2]


def test_timestamps_optional_when_the_model_reads_no_times(hashed):
    schema = RequestSchema(side=["category"], tasks=["click", "like"], needs_timestamps=False)
    body = {
        "history": [{"item": "x", "category": "c1", "actions": {"like": 1}}],
        "candidates": [{"item": "y", "category": "c2"}],
    }
    encoded = encode_request(parse_request(json.dumps(body), 1, schema), Vocabularies.from_prepared(hashed))
    assert encoded.history_timestamps.tolist() == [0]
    config = RankingModelConfig()
    assert needs_timestamps(config)
    config.interaction.num_time_buckets = 0
    assert not needs_timestamps(config)


def test_action_feature_requests(with_action_feature):
    vocabs = Vocabularies.from_prepared(with_action_feature)
    schema = RequestSchema.of(vocabs, needs_timestamps=True)
    body = {
        "history": [
            {"item": "x", "category": "c1", "action": 5, "timestamp": 1},
            {"item": "x", "category": "c1", "action": "9", "timestamp": 2},
        ],
        "candidates": [{"item": "y", "category": "c2", "timestamp": 3}],
    }
    encoded = encode_request(parse_request(json.dumps(body), 1, schema), vocabs)
    assert encoded.history_actions.tolist() == [int(vocabs.action.rows(["5"])[0][0]), 0]
    assert encoded.unknown["action"] == 1
    with pytest.raises(RequestError, match=r"history\[0\]: unexpected key\(s\) \['actions'\]"):
        parse_request(_line(), 2, schema)
    body["history"] = [{"item": "x", "category": "c1", "timestamp": 1}]
    with pytest.raises(RequestError, match=r"line 3: history\[0\].action: missing"):
        parse_request(json.dumps(body), 3, schema)
