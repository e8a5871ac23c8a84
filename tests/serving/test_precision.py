"""``dfgr export --precision bf16``: the candidate graph in bf16 serves close to fp32, its error recorded."""

import pytest
import torch

from dfgr_torchrec.features import USER_FEATURE
from dfgr_torchrec.serving.compile import export_candidate_graph
from dfgr_torchrec.serving.export import write_artifact
from dfgr_torchrec.serving.graph import CandidateGraph
from dfgr_torchrec.serving.precision import precision_error
from dfgr_torchrec.serving.ranker import Ranker, read_manifest, request_batch
from dfgr_torchrec.serving.requests import RequestSchema, encode_request, parse_request
from dfgr_torchrec.serving.vocab import Vocabularies
from tests.serving.conftest import prepare_tiny
from tests.serving.test_ranker import HISTORY, _full_probabilities, _line, _model, _probabilities

# bf16 keeps 8 mantissa bits: the tiny models' probabilities moved by 1e-3 to 1.6e-3 at most when measured
TOLERANCE = 2e-2


def _batch(vocabs, line):
    encoded = encode_request(parse_request(line, 1, RequestSchema.of(vocabs, True)), vocabs)
    return request_batch(encoded, slice(0, None), True, [USER_FEATURE])


@pytest.mark.parametrize("kind", ["dfgr", "metagr"])
def test_a_bf16_artifact_scores_close_to_fp32_and_records_its_error(tmp_path, kind):
    vocabs = Vocabularies.from_prepared(prepare_tiny(tmp_path, vocab={"oov": "hash", "hash_buckets": 4}))
    model = _model(vocabs, kind=kind)
    line = _line("a", HISTORY)
    out = write_artifact(
        model, vocabs, str(tmp_path / "bf16"), compile=False, precision="bf16", check_batches=[_batch(vocabs, line)]
    )
    manifest = read_manifest(out)
    error = manifest["precision_error"]
    assert manifest["precision"] == "bf16" and error["users"] == 1 and error["scores"] == 3 * 2
    assert 0 < error["max_abs_probability"] < TOLERANCE
    results, errors = Ranker.load(out).score_lines([line])
    got, expected = _probabilities(results[0], ["click", "like"]), _full_probabilities(model, vocabs, line)
    assert errors == [] and 0 < (got - expected).abs().max() < TOLERANCE
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the bf16 copy left the model as it was


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_the_program_holds_the_dense_weights_in_its_precision_and_no_table(tmp_path, precision, dtype):
    vocabs = Vocabularies.from_prepared(prepare_tiny(tmp_path))
    model = _model(vocabs)
    weights = dict(export_candidate_graph(model, precision).named_parameters())
    graph = dict(CandidateGraph(model).named_parameters())
    assert not any(".collection." in n for n in graph)  # the tables stay outside (looked up before it)
    assert set(weights) == {f"inner.{n}" for n in graph} and all(w.dtype == dtype for w in weights.values())


def test_an_unknown_precision_is_named(tmp_path):
    vocabs = Vocabularies.from_prepared(prepare_tiny(tmp_path))
    with pytest.raises(ValueError, match="precision: expected one of \\['fp32', 'bf16'\\], got 'fp16'"):
        export_candidate_graph(_model(vocabs), "fp16")


def test_the_error_of_the_fp32_graph_against_itself_is_zero(tmp_path):
    vocabs = Vocabularies.from_prepared(prepare_tiny(tmp_path, vocab={"oov": "hash", "hash_buckets": 4}))
    model = _model(vocabs)
    error = precision_error(model, export_candidate_graph(model).module(), [_batch(vocabs, _line("a", HISTORY))])
    assert error["max_abs_logit"] < 1e-5
