"""The exported candidate graph equals the eager cached path (which equals the full recompute)."""

import pytest
import torch

from dfgr_torchrec.config import AttentionForm, MaskMode
from dfgr_torchrec.models.hstu import HSTUModel
from dfgr_torchrec.models.ranking import DFGRRankingModel, MetaGRRankingModel
from dfgr_torchrec.serving.compile import compile_package, export_candidate_graph
from dfgr_torchrec.serving.graph import CandidateGraph, graph_inputs
from dfgr_torchrec.serving.scorer import CachedScorer
from tests.serving.test_history import CASES, _batch, _candidates_only, _model, _repeating, _users


def _inputs(model, scorer, users):
    state = scorer.encode(_batch(users))[0]
    candidates = _candidates_only(users)
    with torch.no_grad():
        embedded = model.embedding(candidates.features).candidates.values()
        repeat = scorer.candidate_repeat([state], candidates)
        embedded = embedded if repeat is None else embedded + repeat
    expected = scorer.score([state], candidates).values()
    return graph_inputs(model.interaction, state, embedded, candidates.candidate_timestamps), expected


SHAPES = [(9, 4), (1, 1), (20, 7)]  # other shapes than the export example


@pytest.mark.parametrize("cls,mode,form", CASES)
def test_the_eager_graph_equals_the_cached_scores(cls, mode, form):
    model = _model(cls, mode, form)
    scorer = CachedScorer(model)
    for seed, (n, m) in enumerate(SHAPES):
        inputs, expected = _inputs(model, scorer, _users([n], [m], seed=seed))
        with torch.no_grad():
            torch.testing.assert_close(CandidateGraph(model)(*inputs), expected, atol=1e-5, rtol=0)


# The exported program is the same graph traced; one case per model covers both tracings
# (the slow AOTInductor test and `dfgr bench serving` check the compiled form).
@pytest.mark.parametrize(
    "cls,mode,form",
    [
        (DFGRRankingModel, MaskMode.SESSION, AttentionForm.POINTWISE),
        (MetaGRRankingModel, MaskMode.POSITION, AttentionForm.SOFTMAX),
        (HSTUModel, MaskMode.SESSION, AttentionForm.POINTWISE),
    ],
)
def test_the_exported_program_equals_the_cached_scores(cls, mode, form):
    model = _model(cls, mode, form)
    scorer = CachedScorer(model)
    program = export_candidate_graph(model).module()
    for seed, (n, m) in enumerate(SHAPES):
        inputs, expected = _inputs(model, scorer, _users([n], [m], seed=seed))
        with torch.no_grad():
            torch.testing.assert_close(program(*inputs), expected, atol=1e-5, rtol=0)


def test_graph_inputs_need_timestamps_when_the_model_encodes_time():
    model = _model(DFGRRankingModel)
    state = CachedScorer(model).encode(_batch(_users([3], [1])))[0]
    state.timestamps = None
    with pytest.raises(ValueError, match="timestamps"):
        graph_inputs(model.interaction, state, torch.randn(1, 16), None)


@pytest.mark.slow
def test_aot_inductor_package_equals_the_cached_scores(tmp_path):
    """One compile (about a minute here); MetaGR's graph differs only in its inputs (tested exported)."""
    model = _model(DFGRRankingModel, MaskMode.SESSION, AttentionForm.POINTWISE)
    scorer = CachedScorer(model)
    path = compile_package(export_candidate_graph(model), str(tmp_path / "scoring_aoti.pt2"))
    runner = torch._inductor.aoti_load_package(path)
    for seed, (n, m) in enumerate([(9, 4), (25, 2)]):
        inputs, expected = _inputs(model, scorer, _users([n], [m], seed=seed))
        torch.testing.assert_close(runner(*inputs), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", list(MaskMode))
def test_the_exported_program_with_the_repeat_feature_equals_the_cached_scores(mode):
    model = _model(DFGRRankingModel, mode, repeat=True)
    scorer = CachedScorer(model)
    program = export_candidate_graph(model).module()
    for seed, (n, m) in enumerate(SHAPES):
        inputs, expected = _inputs(model, scorer, _repeating(_users([n], [m], seed=seed)))
        with torch.no_grad():
            torch.testing.assert_close(CandidateGraph(model)(*inputs), expected, atol=1e-5, rtol=0)
            torch.testing.assert_close(program(*inputs), expected, atol=1e-5, rtol=0)


def test_the_graph_refuses_metagr_with_the_repeat_feature():
    with pytest.raises(ValueError, match="embeddings.repeat_feature"):
        CandidateGraph(_model(MetaGRRankingModel, repeat=True))


def test_hstu_with_meta_s_batch_normaliser_is_refused_by_name():
    """Meta's normaliser (the batch's longest sequence) makes a cached history depend on its candidates."""
    model = _model(HSTUModel)
    model.interaction.config.attention_scale_len = None
    with pytest.raises(ValueError, match="model.interaction.attention_scale_len: hstu's default normaliser"):
        CandidateGraph(model)
    with pytest.raises(ValueError, match="attention_scale_len"):
        CachedScorer(model)
