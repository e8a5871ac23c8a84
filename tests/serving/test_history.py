"""The history cache is exact: cached scores and appended states equal the full recompute."""

import dataclasses

import pytest
import torch

from dfgr_torchrec.batch import make_sequence_batch
from dfgr_torchrec.config import (
    AttentionForm,
    AttentionKernel,
    InteractionConfig,
    MaskMode,
    RankingModelConfig,
    SequenceEmbeddingConfig,
    TaskConfig,
)
from dfgr_torchrec.features import ACTION_FEATURE, ITEM_FEATURE, USER_FEATURE
from dfgr_torchrec.models.hstu import HSTUModel
from dfgr_torchrec.models.ranking import DFGRRankingModel, MetaGRRankingModel
from dfgr_torchrec.serving.history import HistoryState
from dfgr_torchrec.serving.scorer import CachedScorer

NUM_ITEMS, NUM_TASKS, NUM_USERS, D = 100, 2, 10, 16
MODELS = [DFGRRankingModel, MetaGRRankingModel, HSTUModel]  # hstu with a constant normaliser (_model)
ATOL = 1e-5


def _model(
    cls,
    mode=MaskMode.POSITION,
    form=AttentionForm.POINTWISE,
    kernel=AttentionKernel.PADDED,
    max_seq_len=32,
    repeat=False,
    user_context="add",
):
    config = RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(
            item_vocab_size=NUM_ITEMS,
            action_vocab_sizes={ACTION_FEATURE: 2**NUM_TASKS},
            user_vocab_sizes={USER_FEATURE: NUM_USERS},
            embedding_dim=D,
            repeat_feature=repeat,
            user_context=user_context,
        ),
        interaction=InteractionConfig(
            d_model=D,
            num_layers=3,
            num_heads=2,
            attention_dim=8,
            linear_dim=8,
            mask_mode=mode,
            attention_form=form,
            max_seq_len=max_seq_len,
            num_time_buckets=16,
            kernel=kernel,
            # hstu's default (Meta's) divides by the batch's longest sequence: no cache can serve that
            attention_scale_len=max_seq_len if cls is HSTUModel else None,
        ),
        tasks=[TaskConfig("like"), TaskConfig("follow")],
        head_hidden_dims=[16],
    )
    torch.manual_seed(0)
    model = cls(config)
    with torch.no_grad():  # large enough that a wrong mask or a stale cache shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def _users(lengths, candidates, seed=0):
    """Per user: items, actions, non-decreasing times with ties (sessions), candidates whose
    times fall inside and after the history (so session masks cut the history)."""
    g = torch.Generator().manual_seed(seed)
    users = []
    for u, (n, m) in enumerate(zip(lengths, candidates)):
        times = (1000 + torch.cumsum(torch.randint(0, 3, (n,), generator=g) * 10, 0)).tolist()
        last = times[-1] if times else 1000
        users.append(
            dict(
                user=u % NUM_USERS,
                items=torch.randint(1, NUM_ITEMS, (n,), generator=g).tolist(),
                actions=torch.randint(0, 2**NUM_TASKS, (n,), generator=g).tolist(),
                times=times,
                cand_items=torch.randint(1, NUM_ITEMS, (m,), generator=g).tolist(),
                cand_times=torch.randint(1000, last + 20, (m,), generator=g).tolist(),
            )
        )
    return users


def _repeating(users, rows=6):
    """``users`` with items folded onto a few rows: histories and candidates repeat items."""
    fold = lambda items: [1 + i % rows for i in items]  # noqa: E731
    return [dict(u, items=fold(u["items"]), cand_items=fold(u["cand_items"])) for u in users]


def _batch(users, history=slice(None), with_candidates=True):
    pick = lambda u, key: u[key][history]  # noqa: E731
    return make_sequence_batch(
        history={
            ITEM_FEATURE: [pick(u, "items") for u in users],
            ACTION_FEATURE: [pick(u, "actions") for u in users],
            USER_FEATURE: [[u["user"]] for u in users],
        },
        timestamps=[pick(u, "times") for u in users],
        labels=[[[0.0] * NUM_TASKS for _ in pick(u, "items")] for u in users],
        candidates={ITEM_FEATURE: [u["cand_items"] if with_candidates else [] for u in users]},
        candidate_timestamps=[u["cand_times"] if with_candidates else [] for u in users],
        candidate_labels=[[[0.0] * NUM_TASKS for _ in u["cand_items"]] if with_candidates else [] for u in users],
        num_tasks=NUM_TASKS,
    )


def _candidates_only(users):
    return _batch(users, history=slice(0, 0))


CASES = [(cls, mode, form) for cls in MODELS for mode in MaskMode for form in AttentionForm]


@pytest.mark.parametrize("cls,mode,form", CASES)
def test_cached_scores_equal_the_full_recompute_on_a_ragged_batch(cls, mode, form):
    model = _model(cls, mode, form)
    users = _users([7, 1, 12, 0, 4], [3, 2, 5, 2, 1])
    batch = _batch(users)
    scorer = CachedScorer(model)
    with torch.no_grad():
        full = model.score_candidates(batch).values()
    states = scorer.encode(batch)
    assert [s.num_interactions for s in states] == [7, 1, 12, 0, 4]
    cached = scorer.score(states, _candidates_only(users))
    assert cached.lengths().tolist() == [3, 2, 5, 2, 1]
    torch.testing.assert_close(cached.values(), full, atol=ATOL, rtol=0)
    # one user at a time (the serving case) gives the same numbers
    for b, user in enumerate([users[2], users[0]]):
        one = scorer.score([states[[2, 0][b]]], _candidates_only([user])).values()
        with torch.no_grad():
            torch.testing.assert_close(one, model.score_candidates(_batch([user])).values(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("cls", MODELS)
def test_the_reference_kernel_gives_the_same_cached_scores(cls):
    users = _users([5, 9], [4, 3], seed=3)
    fast = CachedScorer(_model(cls, MaskMode.SESSION))
    slow = CachedScorer(_model(cls, MaskMode.SESSION, kernel=AttentionKernel.REFERENCE))
    batch = _batch(users)
    a = fast.score(fast.encode(batch), batch).values()
    b = slow.score(slow.encode(batch), batch).values()
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cls,mode,form", CASES)
def test_append_then_score_equals_the_full_score_of_the_longer_history(cls, mode, form):
    model = _model(cls, mode, form)
    users = _users([14], [4], seed=1)
    scorer = CachedScorer(model)
    with torch.no_grad():
        full_state = scorer.encode(_batch(users))[0]
        full = model.score_candidates(_batch(users)).values()
    for cut in (0, 5, 13):  # append one, several and all-but-none interactions
        state = scorer.encode(_batch(users, history=slice(0, cut)))[0]
        for start in range(cut, 14, 4):  # in chunks of up to 4
            state = scorer.append(state, _batch(users, history=slice(start, min(start + 4, 14)), with_candidates=False))
        assert state.num_interactions == 14
        for layer in range(3):
            torch.testing.assert_close(state.keys[layer], full_state.keys[layer], atol=ATOL, rtol=0)
            torch.testing.assert_close(state.values[layer], full_state.values[layer], atol=ATOL, rtol=0)
        cached = scorer.score([state], _candidates_only(users)).values()
        torch.testing.assert_close(cached, full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cls", MODELS)
def test_append_inside_the_last_session_recomputes_that_session(cls):
    model = _model(cls, MaskMode.SESSION)
    users = _users([6], [3], seed=2)
    users[0]["times"] = [1000, 1010, 1020, 1020, 1020, 1030]  # the cut falls inside the 1020 session
    scorer = CachedScorer(model)
    state = scorer.encode(_batch(users, history=slice(0, 3)))[0]
    state = scorer.append(state, _batch(users, history=slice(3, 6), with_candidates=False))
    with torch.no_grad():
        full = model.score_candidates(_batch(users)).values()
    torch.testing.assert_close(scorer.score([state], _candidates_only(users)).values(), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cls", MODELS)
def test_append_past_max_seq_len_slides_the_window(cls):
    model = _model(cls, max_seq_len=8)
    users = _users([11], [2], seed=4)
    scorer = CachedScorer(model)
    state = scorer.encode(_batch(users, history=slice(0, 8)))[0]
    state = scorer.append(state, _batch(users, history=slice(8, 11), with_candidates=False))
    assert state.num_interactions == 8
    window = [dict(u, items=u["items"][3:], actions=u["actions"][3:], times=u["times"][3:]) for u in users]
    with torch.no_grad():
        full = model.score_candidates(_batch(window)).values()
    torch.testing.assert_close(scorer.score([state], _candidates_only(users)).values(), full, atol=ATOL, rtol=0)


def test_a_stale_cache_would_be_caught():
    """The comparison can fail: scoring against another user's state differs from the full score."""
    model = _model(DFGRRankingModel)
    users = _users([6, 6], [3, 3], seed=5)
    scorer = CachedScorer(model)
    states = scorer.encode(_batch(users))
    swapped = scorer.score(states[::-1], _candidates_only(users)).values()
    with torch.no_grad():
        full = model.score_candidates(_batch(users)).values()
    assert (swapped - full).abs().max() > 1e-3


def test_state_bytes_and_prefix():
    model = _model(MetaGRRankingModel)
    users = _users([5], [1])
    state = CachedScorer(model).encode(_batch(users))[0]
    assert state.order_keys.shape[0] == 10  # two tokens per interaction
    expected = sum(
        t.numel() * t.element_size()
        for t in [state.tokens, state.timestamps, state.order_keys, state.keys, state.values]
    )
    assert state.nbytes == expected
    prefix = state.truncated(2)
    assert isinstance(prefix, HistoryState) and prefix.num_interactions == 2 and prefix.keys.shape[1] == 4


def test_scorer_refuses_other_models():
    with pytest.raises(TypeError, match="serves generative models \\(dfgr, metagr, hstu\\), got Linear"):
        CachedScorer(torch.nn.Linear(2, 2))


def test_appending_older_interactions_in_session_mode_is_an_error():
    model = _model(DFGRRankingModel, MaskMode.SESSION)
    users = _users([4], [1], seed=6)
    scorer = CachedScorer(model)
    state = scorer.encode(_batch(users, history=slice(1, 4)))[0]
    with pytest.raises(ValueError, match="must not be older"):
        scorer.append(state, _batch(users, history=slice(0, 1), with_candidates=False))
    assert dataclasses.is_dataclass(state)


REPEAT_CASES = [(mode, context) for mode in MaskMode for context in ("add", "token")]


@pytest.mark.parametrize("mode,context", REPEAT_CASES)
def test_the_repeat_feature_gives_cached_scores_equal_to_the_full_recompute(mode, context):
    model = _model(DFGRRankingModel, mode, repeat=True, user_context=context)
    users = _repeating(_users([7, 1, 12, 0, 4], [3, 2, 5, 2, 1]))
    batch = _batch(users)
    scorer = CachedScorer(model)
    with torch.no_grad():
        full = model.score_candidates(batch).values()
        model_off = _model(DFGRRankingModel, mode, user_context=context)
        assert (full - model_off.score_candidates(batch).values()).abs().max() > 1e-3  # the feature matters
    states = scorer.encode(batch)
    assert [s.repeat_ids.shape[0] for s in states] == [n + (context == "token") for n in (7, 1, 12, 0, 4)]
    torch.testing.assert_close(scorer.score(states, _candidates_only(users)).values(), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode,context", REPEAT_CASES)
def test_the_repeat_feature_survives_append(mode, context):
    model = _model(DFGRRankingModel, mode, repeat=True, user_context=context)
    users = _repeating(_users([14], [4], seed=1))
    scorer = CachedScorer(model)
    with torch.no_grad():
        full = model.score_candidates(_batch(users)).values()
    for cut in (0, 5, 13):
        state = scorer.encode(_batch(users, history=slice(0, cut)))[0]
        for start in range(cut, 14, 4):
            state = scorer.append(state, _batch(users, history=slice(start, min(start + 4, 14)), with_candidates=False))
        torch.testing.assert_close(scorer.score([state], _candidates_only(users)).values(), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("context", ["add", "token"])
def test_the_repeat_feature_slides_with_the_window(context):
    model = _model(DFGRRankingModel, max_seq_len=8, repeat=True, user_context=context)
    users = _repeating(_users([11], [4], seed=4))
    scorer = CachedScorer(model)
    state = scorer.encode(_batch(users, history=slice(0, 8)))[0]
    state = scorer.append(state, _batch(users, history=slice(8, 11), with_candidates=False))
    keep = 8  # the window's interactions (a context token comes on top)
    window = [dict(u, items=u["items"][-keep:], actions=u["actions"][-keep:], times=u["times"][-keep:]) for u in users]
    with torch.no_grad():
        full = model.score_candidates(_batch(window)).values()
    torch.testing.assert_close(scorer.score([state], _candidates_only(users)).values(), full, atol=ATOL, rtol=0)


def test_the_repeat_feature_is_served_for_dfgr_only():
    with pytest.raises(ValueError, match="embeddings.repeat_feature"):
        CachedScorer(_model(MetaGRRankingModel, repeat=True))
