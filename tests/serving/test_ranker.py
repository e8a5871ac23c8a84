"""The Ranker on an exported artifact: raw ids in, probabilities out, equal to the full recompute;
the history cache is used when a request extends a cached history; bad lines are reported."""

import json
import os
import shutil

import pytest
import torch

from dfgr_torchrec.config import (
    InteractionConfig,
    MaskMode,
    RankingModelConfig,
    SequenceEmbeddingConfig,
    TaskConfig,
    UserContext,
    retype,
)
from dfgr_torchrec.features import ACTION_FEATURE, USER_FEATURE
from dfgr_torchrec.models import build_model
from dfgr_torchrec.serving.export import ARTIFACT_FILE, write_artifact
from dfgr_torchrec.serving.ranker import Ranker, read_manifest, request_batch
from dfgr_torchrec.serving.requests import RequestSchema, encode_request, parse_request
from dfgr_torchrec.serving.vocab import Vocabularies
from tests.serving.conftest import prepare_tiny


def _model(vocabs, kind="dfgr", mode=MaskMode.POSITION, bias_terms=False, user_context=UserContext.ADD):
    config = RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(
            item_vocab_size=vocabs.item.num_rows,
            item_side_vocab_sizes={"category": vocabs.side["category"].num_rows},
            action_vocab_sizes={ACTION_FEATURE: 4},
            user_vocab_sizes={USER_FEATURE: vocabs.user.num_rows},
            embedding_dim=8,
            user_context=user_context,
        ),
        interaction=InteractionConfig(
            d_model=8,
            num_layers=2,
            num_heads=2,
            attention_dim=4,
            linear_dim=4,
            max_seq_len=6,
            num_time_buckets=8,
            mask_mode=mode,
            attention_scale_len=6 if kind == "hstu" else None,  # hstu serves with a constant normaliser
        ),
        tasks=[TaskConfig("click"), TaskConfig("like")],
        head_hidden_dims=[8],
        bias_terms=bias_terms,
    )
    config = retype(config, kind)  # hstu reads no bias terms
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def _interaction(item, t, cat="c1", **actions):
    """A history interaction (its actions, possibly none)."""
    return {"item": item, "category": cat, "timestamp": t, "actions": actions}


def _candidate(item, t, cat="c1"):
    return {"item": item, "category": cat, "timestamp": t}


HISTORY = [
    _interaction("x", 1, click=1),
    _interaction("y", 2, "c2", like=1),
    _interaction("q", 4, click=1, like=1),
    _interaction("w", 5),
    _interaction("unseen-item", 6, "c9", click=1),
]
CANDIDATES = [_candidate("y", 7, "c2"), _candidate("u", 7, "c3"), _candidate("x", 8)]


def _line(user, history, candidates=CANDIDATES):
    return json.dumps({"user": user, "history": history, "candidates": candidates})


def _full_probabilities(model, vocabs, line):
    schema = RequestSchema.of(vocabs, True)
    encoded = encode_request(parse_request(line, 1, schema), vocabs)
    n = encoded.history_items.shape[0]
    window = slice(max(n - model.config.interaction.max_seq_len, 0), None)
    batch = request_batch(encoded, window, True, [USER_FEATURE])
    with torch.no_grad():
        return torch.sigmoid(model.score_candidates(batch).values())


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """One exported artifact for the module's tests (exporting takes seconds); tests do not change it."""
    tmp = tmp_path_factory.mktemp("ranker")
    vocabs = Vocabularies.from_prepared(prepare_tiny(tmp, vocab={"oov": "hash", "hash_buckets": 4}))
    model = _model(vocabs, mode=MaskMode.SESSION)
    out = write_artifact(model, vocabs, str(tmp / "artifact"), compile=False, source={"test": True})
    return out, model, vocabs


def _probabilities(result, tasks):
    return torch.tensor([[s[t] for t in tasks] for s in result["scores"]])


def test_scores_equal_the_full_recompute_and_the_cache_serves_extensions(artifact):
    out, model, vocabs = artifact
    manifest = read_manifest(out)
    assert manifest["model"]["type"] == "dfgr" and manifest["compiled"].startswith("skipped")
    for compiled in (True, False):  # the exported program, and eager PyTorch
        ranker = Ranker.load(out, compiled=compiled)
        lines = [_line("a", HISTORY[:3]), _line("a", HISTORY[:5]), _line("a", HISTORY), _line("b", HISTORY[1:4])]
        results, errors = ranker.score_lines(lines)
        assert errors == [] and [r["line"] for r in results] == [1, 2, 3, 4]
        for line, result in zip(lines, results):
            assert [s["item"] for s in result["scores"]] == ["y", "u", "x"]
            expected = _full_probabilities(model, vocabs, line)
            torch.testing.assert_close(_probabilities(result, ["click", "like"]), expected, atol=1e-5, rtol=0)
        # line 2 extended line 1's history (an append), line 3 repeated it, line 4 is a new user
        assert ranker.cache.stats.hits == 2 and ranker.cache.stats.misses == 2
        items = [x["item"] for line in lines for x in [*json.loads(line)["history"], *CANDIDATES]]
        assert ranker.unknown["item"] == vocabs.item.rows(items)[1] >= 2  # "unseen-item" in lines 2 and 3


def test_a_longer_history_slides_the_window_and_a_changed_history_is_encoded_again(artifact):
    out, model, vocabs = artifact
    ranker = Ranker.load(out)
    longer = HISTORY + [_interaction("v", 9, like=1), _interaction("x", 10, click=1)]  # 7 > max_seq_len 6
    changed = [_interaction("w", 1)] + HISTORY[1:]
    candidates = [_candidate("y", 11, "c2")]
    lines = [_line("a", HISTORY), _line("a", longer, candidates), _line("a", changed, candidates)]
    results, errors = ranker.score_lines(lines)
    assert errors == []
    for line, result in zip(lines, results):
        expected = _full_probabilities(model, vocabs, line)
        torch.testing.assert_close(_probabilities(result, ["click", "like"]), expected, atol=1e-5, rtol=0)
    assert ranker.cache.stats.hits == 2  # the changed history was found but not reused (its prefix differs)


def test_bad_lines_are_reported_by_number_and_the_rest_scored(artifact):
    out, _, _ = artifact
    ranker = Ranker.load(out)
    lines = [
        _line("a", HISTORY),
        "{not json",
        _line("b", HISTORY, candidates=[]),
        _line("c", HISTORY[:2]),
        json.dumps({"history": [_interaction("x", 1, bogus=1)], "candidates": CANDIDATES}),
    ]
    results, errors = ranker.score_lines(lines)
    assert [r["line"] for r in results] == [1, 4]
    assert [e.line for e in errors] == [2, 3, 5]
    assert "bogus" in str(errors[2]) and "click" in str(errors[2])


def test_an_artifact_with_a_changed_file_is_refused(artifact, tmp_path):
    out = shutil.copytree(artifact[0], tmp_path / "copy")
    with open(os.path.join(out, "weights.pt"), "ab") as f:
        f.write(b"0")
    with pytest.raises(ValueError, match="weights.pt: missing or changed"):
        Ranker.load(out)


def test_a_folder_that_is_no_artifact_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=ARTIFACT_FILE):
        Ranker.load(str(tmp_path))


def test_a_run_directory_loads_the_artifact_exported_into_it(artifact, tmp_path):
    """``dfgr export --run DIR`` writes ``DIR/artifact``; ``Ranker.load(DIR)`` (``dfgr score --run``) finds it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: run\n")
    with pytest.raises(FileNotFoundError, match=r"a run directory with no exported artifact .*dfgr export --run"):
        Ranker.load(str(run))
    shutil.copytree(artifact[0], run / "artifact")
    results, errors = Ranker.load(str(run), compiled=False).score_lines([_line("a", HISTORY)])
    assert errors == [] and len(results[0]["scores"]) == len(CANDIDATES)


@pytest.mark.parametrize("kind", ["metagr", "hstu"])
def test_metagr_and_hstu_artifacts_serve_too(hashed, tmp_path, kind):
    vocabs = Vocabularies.from_prepared(hashed)
    model = _model(vocabs, kind=kind)
    out = write_artifact(model, vocabs, str(tmp_path / kind), compile=False)
    results, errors = Ranker.load(out).score_lines([_line("a", HISTORY)])
    expected = _full_probabilities(model, vocabs, _line("a", HISTORY))
    torch.testing.assert_close(_probabilities(results[0], ["click", "like"]), expected, atol=1e-5, rtol=0)


def test_bias_terms_are_served_by_the_graph_and_in_eager_mode(hashed, tmp_path):
    vocabs = Vocabularies.from_prepared(hashed)
    model = _model(vocabs, bias_terms=True)
    out = write_artifact(model, vocabs, str(tmp_path / "bias_terms"), compile=False)
    lines = [_line("a", HISTORY), _line("b", HISTORY[:2])]
    for compiled in (True, False):
        results, errors = Ranker.load(out, compiled=compiled).score_lines(lines)
        assert errors == []
        for line, result in zip(lines, results):
            expected = _full_probabilities(model, vocabs, line)
            torch.testing.assert_close(_probabilities(result, ["click", "like"]), expected, atol=1e-5, rtol=0)
    with_terms = _full_probabilities(model, vocabs, lines[0])
    model.bias_terms = None  # the terms count: without them the scores differ
    assert not torch.allclose(_full_probabilities(model, vocabs, lines[0]), with_terms, atol=1e-3)


def test_loading_needs_neither_training_code_nor_data(artifact):
    import subprocess
    import sys

    out, _, _ = artifact
    code = (
        "import sys; from dfgr_torchrec.serving.ranker import Ranker; Ranker.load(sys.argv[1]); "
        "bad = [m for m in sys.modules if m.startswith(('dfgr_torchrec.training', 'dfgr_torchrec.recipes', "
        "'dfgr_torchrec.data.prepare', 'dfgr_torchrec.data.dataset', 'dfgr_torchrec.study'))]; print(bad)"
    )
    result = subprocess.run([sys.executable, "-c", code, out], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_int8_tables_score_close_to_fp32(artifact, tmp_path):
    _, model, vocabs = artifact
    out = write_artifact(model, vocabs, str(tmp_path / "int8"), compile=False, tables="int8")
    assert read_manifest(out)["tables"] == "int8"
    ranker = Ranker.load(out)
    assert type(ranker.model.embedding.collection).__module__.startswith("torchrec.quant")
    results, errors = ranker.score_lines([_line("a", HISTORY)])
    expected = _full_probabilities(model, vocabs, _line("a", HISTORY))
    got = _probabilities(results[0], ["click", "like"])
    assert errors == [] and (got - expected).abs().max() < 5e-2 and not torch.equal(got, expected)


@pytest.mark.parametrize("kind", ["dfgr", "metagr", "hstu"])
@pytest.mark.parametrize("mode", list(MaskMode))
def test_a_context_token_model_serves_as_it_scores_from_empty_to_sliding_histories(hashed, tmp_path, kind, mode):
    """The context token is cached as the state's first token: a user without history, the first
    interactions arriving (an append), a longer history, a window that slides, all equal the full
    recompute, from the exported graph and in eager mode."""
    vocabs = Vocabularies.from_prepared(hashed)
    model = _model(vocabs, kind=kind, mode=mode, bias_terms=True, user_context=UserContext.TOKEN)
    out = write_artifact(model, vocabs, str(tmp_path / "token"), compile=False)
    longer = HISTORY + [_interaction("v", 9, like=1), _interaction("x", 10, click=1)]  # 7 > max_seq_len 6
    late = [_candidate("y", 11, "c2"), _candidate("u", 12, "c3")]
    later = [{**x, "timestamp": x["timestamp"] + 100} for x in longer]  # far from the empty state's time
    later_candidates = [{**c, "timestamp": c["timestamp"] + 100} for c in late]
    lines = [
        _line("a", []),
        _line("a", HISTORY[:1]),
        _line("a", HISTORY[:3]),
        _line("a", HISTORY),
        _line("a", longer, late),
        _line("b", []),
        _line("b", later[:2], later_candidates),
    ]
    for compiled in (True, False):
        ranker = Ranker.load(out, compiled=compiled)
        results, errors = ranker.score_lines(lines)
        assert errors == []
        for line, result in zip(lines, results):
            expected = _full_probabilities(model, vocabs, line)
            torch.testing.assert_close(_probabilities(result, ["click", "like"]), expected, atol=1e-5, rtol=0)
        assert ranker.cache.stats.hits == 5  # every later line of a user extended its cached history
    alone = [_full_probabilities(model, vocabs, _line(user, [])) for user in ("a", "b")]
    assert not torch.allclose(alone[0], alone[1])  # without history, the user's token still speaks


def test_export_names_what_it_cannot_serve():
    from dfgr_torchrec.config import ArchModelConfig, HSTUModelConfig
    from dfgr_torchrec.serving.export import check_servable

    with pytest.raises(ValueError, match=r"model.type: export serves \['dfgr', 'metagr', 'hstu'\], got 'dcn'"):
        check_servable(ArchModelConfig())
    with pytest.raises(ValueError, match="hstu's default normaliser is the batch's longest sequence"):
        check_servable(HSTUModelConfig())
    check_servable(HSTUModelConfig(interaction=InteractionConfig(attention_scale_len=64)))
