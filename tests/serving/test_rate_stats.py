"""Serving ``model.rate_terms`` and ``model.rate_offset``: the artifact carries the training counts, the
offset's fit and each action's labels (``rates.pt``); the Ranker's scores equal the model's own
forward with the history's true labels, compiled or eager; what cannot be served is refused in one line."""

import json

import pytest
import torch

from dfgr_torchrec.config import MaskMode, retype
from dfgr_torchrec.data.dataset import PreparedData
from dfgr_torchrec.features import USER_FEATURE
from dfgr_torchrec.models import build_model
from dfgr_torchrec.serving.export import write_artifact
from dfgr_torchrec.serving.ranker import Ranker, request_batch
from dfgr_torchrec.serving.rate_stats import RATES_FILE, action_labels
from dfgr_torchrec.serving.requests import RequestSchema, encode_request, parse_request
from dfgr_torchrec.serving.vocab import Vocabularies
from tests.serving.conftest import prepare_tiny
from tests.serving.test_ranker import CANDIDATES, HISTORY, _line, _model, _probabilities

TASKS = ["click", "like"]


def _rate_model(prepared: str, vocabs: Vocabularies, kind: str, option: str, mode=MaskMode.SESSION):
    """``_model``'s config with the rate option, built with the prepared data (the fit), its weights
    (the zero output layer of the offset included) moved off their start."""
    config = _model(vocabs, kind=kind, mode=mode).config
    config = retype(config, kind)
    setattr(config, option, True)
    torch.manual_seed(1)
    model = build_model(config, data=PreparedData(prepared))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def _reference(model, vocabs, line, history):
    """The model's own forward on the request's window, the history's labels from the request."""
    encoded = encode_request(parse_request(line, 1, RequestSchema.of(vocabs, True)), vocabs)
    n = encoded.history_items.shape[0]
    first = max(n - model.config.interaction.max_seq_len, 0)
    batch = request_batch(encoded, slice(first, None), True, [USER_FEATURE])
    labels = torch.tensor([[float(x["actions"].get(t, 0)) for t in TASKS] for x in history[first:]])
    batch.labels = labels.reshape(-1, len(TASKS))
    with torch.no_grad():
        return torch.sigmoid(model.score_candidates(batch).values())


@pytest.mark.parametrize("kind", ["dfgr", "metagr"])
@pytest.mark.parametrize("option", ["rate_offset", "rate_terms"])
def test_rate_models_are_served_as_their_forward_with_the_historys_labels(tmp_path, kind, option):
    prepared = prepare_tiny(tmp_path, vocab={"oov": "hash", "hash_buckets": 4})
    vocabs = Vocabularies.from_prepared(prepared)
    model = _rate_model(prepared, vocabs, kind, option)
    out = write_artifact(model, vocabs, str(tmp_path / "artifact"), compile=False, data=PreparedData(prepared))
    assert RATES_FILE in json.loads((tmp_path / "artifact" / "artifact.json").read_text())["files"]
    earlier = [{**x, "timestamp": x["timestamp"] - 10} for x in HISTORY]
    histories = [HISTORY, HISTORY[:2], earlier + HISTORY]  # the last is longer than max_seq_len: a window
    for compiled in (True, False):
        ranker = Ranker.load(out, compiled=compiled)
        for history in histories:
            line = _line("a", history)
            results, errors = ranker.score_lines([line])
            assert errors == []
            expected = _reference(model, vocabs, line, history)
            torch.testing.assert_close(_probabilities(results[0], TASKS), expected, atol=1e-5, rtol=0)
    # the rates count: the same request with other history labels scores differently
    flipped = [{**x, "actions": {"click": 1, "like": 1}} for x in HISTORY]
    results, _ = ranker.score_lines([_line("a", HISTORY), _line("a", flipped)])
    assert not torch.allclose(_probabilities(results[0], TASKS), _probabilities(results[1], TASKS), atol=1e-4)


def test_action_labels_follow_the_bitmask_or_the_action_feature(tmp_path):
    (tmp_path / "bits").mkdir(), (tmp_path / "rating").mkdir()
    bits = action_labels(PreparedData(prepare_tiny(tmp_path / "bits")), action_vocabulary=False)
    assert bits.tolist() == [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    rating = prepare_tiny(
        tmp_path / "rating", action_feature="rating", actions={"like": {"column": "rating", "at_least": 4}}
    )
    table = action_labels(PreparedData(rating), action_vocabulary=True)
    vocab = Vocabularies.from_prepared(rating).action
    rows, _ = vocab.rows(["1", "3", "4", "5"])
    assert table[rows].flatten().tolist() == [0.0, 0.0, 1.0, 1.0]
    assert torch.isnan(table[0]).all()  # the OOV row: no interaction has it


def test_an_action_feature_the_labels_do_not_follow_from_is_refused_at_export(tmp_path):
    """The tiny log's click and like are columns of their own beside the rating action."""
    prepared = prepare_tiny(tmp_path, action_feature="rating")
    with pytest.raises(ValueError, match=r"action row \d+ occurs with labels .* export needs each history label"):
        action_labels(PreparedData(prepared), action_vocabulary=True)


def test_an_unknown_action_is_a_request_error_and_a_missing_rates_file_refuses_the_artifact(tmp_path):
    prepared = prepare_tiny(tmp_path, action_feature="rating", actions={"like": {"column": "rating", "at_least": 4}})
    vocabs = Vocabularies.from_prepared(prepared)
    config = _model(vocabs).config
    config.tasks = config.tasks[1:]  # like only
    config.embeddings.action_vocab_sizes = {k: vocabs.action.num_rows for k in config.embeddings.action_vocab_sizes}
    config.rate_offset = True
    model = build_model(config, data=PreparedData(prepared)).eval()
    out = write_artifact(model, vocabs, str(tmp_path / "artifact"), compile=False, data=PreparedData(prepared))
    history = [{"item": "x", "category": "c1", "timestamp": 1, "action": r} for r in ("5", "9")]
    line = json.dumps({"user": "a", "history": history, "candidates": CANDIDATES})
    results, errors = Ranker.load(out).score_lines([line])
    assert results == [] and "line 1: history[1].action: a value no row of the training data had" in str(errors[0])

    manifest_path = tmp_path / "artifact" / "artifact.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["files"][RATES_FILE]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"no entry for {RATES_FILE}"):
        Ranker.load(out)


def test_a_rates_file_of_other_shapes_or_with_code_is_refused(tmp_path):
    import pickle

    from dfgr_torchrec.serving.rate_stats import load_rate_state

    prepared = prepare_tiny(tmp_path, vocab={"oov": "hash", "hash_buckets": 4})
    model = _rate_model(prepared, Vocabularies.from_prepared(prepared), "dfgr", "rate_offset")
    path = tmp_path / "rates.pt"
    torch.save({"rows": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"rates.pt: expected the tensors \['action_labels'"):
        load_rate_state(model, str(path))

    class Payload:
        def __reduce__(self):
            return (print, ("ran code from the artifact",))

    torch.save({"rows": Payload()}, path, pickle_module=pickle)
    with pytest.raises(ValueError, match="rates.pt: not readable as plain tensors"):
        load_rate_state(model, str(path))
