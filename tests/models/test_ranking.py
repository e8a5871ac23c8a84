"""The properties that make DFGR what the paper describes, checked on the full ranking models."""

import dataclasses
import pathlib

import pytest
import torch
from torchrec import KeyedJaggedTensor

from dfgr_torchrec.batch import SequenceBatch, make_sequence_batch
from dfgr_torchrec.config import (
    AttentionForm,
    InteractionConfig,
    MaskMode,
    RankingModelConfig,
    SequenceEmbeddingConfig,
    TaskConfig,
    UserContext,
    model_config,
    retype,
)
from dfgr_torchrec.data.synthetic_batches import SyntheticSequences
from dfgr_torchrec.features import ACTION_FEATURE
from dfgr_torchrec.models.ranking import DFGRRankingModel, MetaGRRankingModel
from dfgr_torchrec.modules.embeddings import ITEM_FEATURE
from tests.models.users import USER_FEATURE, with_user_feature, with_user_ids

ROOT = pathlib.Path(__file__).resolve().parents[2]
NUM_ITEMS, NUM_TASKS, D = 200, 2, 16
MODELS = [DFGRRankingModel, MetaGRRankingModel]


def _config(mode=MaskMode.POSITION, form=AttentionForm.POINTWISE, bias_terms=False, repeat=False):
    return RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(
            item_vocab_size=NUM_ITEMS,
            action_vocab_sizes={ACTION_FEATURE: 2**NUM_TASKS},
            embedding_dim=D,
            repeat_feature=repeat,
        ),
        interaction=InteractionConfig(
            d_model=D,
            num_layers=2,
            num_heads=2,
            attention_dim=8,
            linear_dim=8,
            mask_mode=mode,
            attention_form=form,
            max_seq_len=32,
            num_time_buckets=16,
        ),
        tasks=[TaskConfig("like"), TaskConfig("follow", weight=0.5)],
        head_hidden_dims=[16],
        bias_terms=bias_terms,
    )


def _model(
    cls, mode=MaskMode.POSITION, form=AttentionForm.POINTWISE, bias_terms=False, user_context=None, repeat=False
):
    """``user_context`` (``"add"`` / ``"token"``) gives the model a user-id table; None: no user feature."""
    torch.manual_seed(0)
    config = _config(mode, form, bias_terms, repeat)
    model = cls(config if user_context is None else with_user_feature(config, user_context))
    # The placeholder/action rows start near zero; make them large so a leak would show.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _batch(session_prob=0.3, seed=0, batch_size=3):
    world = SyntheticSequences(num_items=NUM_ITEMS, num_tasks=NUM_TASKS, session_prob=session_prob, seed=1)
    return world.batch(batch_size, 1, 12, 4, torch.Generator().manual_seed(seed))


def _replace_values(batch: SequenceBatch, key: str, values: torch.Tensor) -> SequenceBatch:
    kjt = batch.features
    per_key = kjt.to_dict()
    new_values = torch.cat([values if k == key else per_key[k].values() for k in kjt.keys()])
    features = KeyedJaggedTensor.from_lengths_sync(keys=kjt.keys(), values=new_values, lengths=kjt.lengths())
    return dataclasses.replace(batch, features=features)


def _flip_actions(batch, indices):
    actions = batch.features[ACTION_FEATURE].values().clone()
    actions[indices] = (actions[indices] + 1) % (2**NUM_TASKS)  # a different action set
    return _replace_values(batch, ACTION_FEATURE, actions)


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("bias_terms, user_context", [(False, None), (True, None), (False, "token")])
def test_changing_an_action_never_changes_its_own_or_earlier_predictions(cls, bias_terms, user_context):
    model, batch = _model(cls, bias_terms=bias_terms, user_context=user_context), _batch()
    if user_context is not None:
        batch = with_user_ids(batch)
    with torch.no_grad():
        base = model(batch).logits
        offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(batch.history_lengths)
        user_start, user_end = int(offsets[0]), int(offsets[1])
        changed_later = 0
        for i in range(user_start, user_end):
            out = model(_flip_actions(batch, [i])).logits
            torch.testing.assert_close(out[: i + 1], base[: i + 1], atol=0, rtol=0)  # i and before: untouched
            torch.testing.assert_close(out[user_end:], base[user_end:], atol=0, rtol=0)  # other users: untouched
            changed_later += int(not torch.allclose(out[i + 1 : user_end], base[i + 1 : user_end]))
        assert changed_later >= (user_end - user_start) - 1, "later predictions should read earlier actions"


@pytest.mark.parametrize("cls", MODELS)
def test_session_mode_never_sees_actions_of_the_own_session(cls):
    model, batch = _model(cls, MaskMode.SESSION), _batch(session_prob=0.6)
    times = batch.timestamps
    offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(batch.history_lengths).tolist()
    checked_sessions = 0
    with torch.no_grad():
        base = model(batch).logits
        for u in range(len(offsets) - 1):
            for i in range(offsets[u], offsets[u + 1]):
                session = [j for j in range(offsets[u], offsets[u + 1]) if times[j] == times[i]]
                out = model(_flip_actions(batch, session)).logits
                not_later = [j for j in range(offsets[u], offsets[u + 1]) if times[j] <= times[i]]
                torch.testing.assert_close(out[not_later], base[not_later], atol=0, rtol=0)
                checked_sessions += len(session) > 1
    assert checked_sessions > 0, "the batch should hold multi-item sessions"


def _prefix_batch(batch, user, upto, candidate, cand_time, mode):
    """The user's history before interaction `candidate` (by position or by time), scoring it."""
    offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(batch.history_lengths).tolist()
    s, e = offsets[user], offsets[user + 1]
    items = batch.features[ITEM_FEATURE].values()[s:e].tolist()
    actions = batch.features[ACTION_FEATURE].values()[s:e].tolist()
    times = batch.timestamps[s:e].tolist()
    labels = batch.labels[s:e].tolist()
    keep = list(range(upto)) if mode == MaskMode.POSITION else [j for j in range(e - s) if times[j] < cand_time]
    users = {}
    if USER_FEATURE in batch.features.keys():
        users = {USER_FEATURE: [[int(batch.features[USER_FEATURE].values()[user])]]}
    return make_sequence_batch(
        history={ITEM_FEATURE: [[items[j] for j in keep]], ACTION_FEATURE: [[actions[j] for j in keep]], **users},
        timestamps=[[times[j] for j in keep]],
        labels=[[labels[j] for j in keep]],
        candidates={ITEM_FEATURE: [[items[candidate]]]},
        candidate_timestamps=[[cand_time]],
        candidate_labels=[[labels[candidate]]],
        num_tasks=NUM_TASKS,
    )


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("mode", list(MaskMode))
@pytest.mark.parametrize("form", list(AttentionForm))
@pytest.mark.parametrize("bias_terms, user_context", [(False, None), (True, None), (False, "add"), (True, "token")])
def test_training_prediction_equals_inference_score(cls, mode, form, bias_terms, user_context):
    model, batch = _model(cls, mode, form, bias_terms, user_context), _batch(session_prob=0.4)
    if user_context is not None:
        batch = with_user_ids(batch)
    _assert_training_equals_inference(model, batch, mode)


def _assert_training_equals_inference(model, batch, mode):
    offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(batch.history_lengths).tolist()
    with torch.no_grad():
        train_logits = model(batch).logits
        for user in range(len(offsets) - 1):
            for i in range(offsets[user + 1] - offsets[user]):
                g = offsets[user] + i
                prefix = _prefix_batch(batch, user, i, i, int(batch.timestamps[g]), mode)
                score = model.score_candidates(prefix).values()
                torch.testing.assert_close(score[0], train_logits[g], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("mode", list(MaskMode))
@pytest.mark.parametrize("bias_terms, user_context", [(False, None), (True, None), (False, "token")])
def test_candidates_are_scored_independently(cls, mode, bias_terms, user_context):
    model, batch = _model(cls, mode, bias_terms=bias_terms, user_context=user_context), _batch()
    if user_context is not None:
        batch = with_user_ids(batch)
    with torch.no_grad():
        together = model.score_candidates(batch)
        cand_items = batch.features["cand_item_id"].values()
        m_offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(batch.candidate_lengths).tolist()
        for c in range(len(cand_items)):
            user = next(u for u in range(len(m_offsets) - 1) if m_offsets[u] <= c < m_offsets[u + 1])
            alone_lengths = torch.zeros_like(batch.candidate_lengths)
            alone_lengths[user] = 1
            kjt = batch.features
            per_key = kjt.to_dict()
            keys = kjt.keys()
            values = torch.cat([per_key[k].values() if k != "cand_item_id" else cand_items[c : c + 1] for k in keys])
            lengths = torch.cat([per_key[k].lengths() if k != "cand_item_id" else alone_lengths for k in keys])
            alone = dataclasses.replace(
                batch,
                features=KeyedJaggedTensor.from_lengths_sync(keys=keys, values=values, lengths=lengths),
                candidate_timestamps=batch.candidate_timestamps[c : c + 1],
                candidate_labels=batch.candidate_labels[c : c + 1],
            )
            torch.testing.assert_close(
                model.score_candidates(alone).values()[0], together.values()[c], atol=1e-5, rtol=1e-5
            )


@pytest.mark.parametrize("cls", MODELS)
def test_a_context_token_carries_the_user_and_leaves_the_item_tokens_alone(cls):
    """In ``token`` mode the user id changes every prediction (training and scoring) but no item
    token; in ``add`` mode it is in the item tokens themselves."""
    batch = _batch()
    other = with_user_ids(batch, [5] * batch.history_lengths.numel())
    batch = with_user_ids(batch)
    for user_context, items_move in ((UserContext.TOKEN, False), (UserContext.ADD, True)):
        model = _model(cls, user_context=user_context)
        with torch.no_grad():
            items = [model.embedding(b.features).items.values() for b in (batch, other)]
            assert items_move != torch.equal(items[0], items[1]), user_context
            for run in (lambda b: model(b).logits, lambda b: model.score_candidates(b).values()):  # noqa: B023 (run now)
                changed = (run(batch) - run(other)).abs().amax(dim=1) > 1e-6
                assert bool(changed.all()), user_context


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("mode", list(MaskMode))
def test_a_user_without_history_is_scored_from_the_context_token(cls, mode):
    model = _model(cls, mode, user_context=UserContext.TOKEN)
    scores = []
    for user in (1, 2):
        batch = make_sequence_batch(
            history={ITEM_FEATURE: [[]], ACTION_FEATURE: [[]], USER_FEATURE: [[user]]},
            timestamps=[[]],
            labels=[[]],
            candidates={ITEM_FEATURE: [[3, 4]]},
            candidate_timestamps=[[100, 100]],
            candidate_labels=[[[0.0] * NUM_TASKS] * 2],
            num_tasks=NUM_TASKS,
        )
        with torch.no_grad():
            scores.append(model.score_candidates(batch).values())
    assert scores[0].shape == (2, NUM_TASKS) and torch.isfinite(scores[0]).all()
    assert not torch.allclose(scores[0], scores[1])


@pytest.mark.parametrize("cls", MODELS)
def test_a_few_steps_lower_the_loss(cls):
    torch.manual_seed(0)
    model, batch = cls(_config()), _batch(batch_size=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        out = model(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("cls", MODELS)
def test_bias_terms_add_the_item_rows_of_their_own_table(cls):
    model, batch = _model(cls, bias_terms=True), _batch()
    table = model.bias_terms.embedding.collection.embeddings["item"].weight
    with torch.no_grad():
        scored = model.score_candidates(batch).values()
        model.bias_terms = None  # the same model without the terms
        without = model.score_candidates(batch).values()
    items = batch.features["cand_item_id"].values()
    assert table.shape == (NUM_ITEMS, 4)  # one column per task, padded to FBGEMM's multiple of 4
    torch.testing.assert_close(scored - without, table[items, :NUM_TASKS].detach(), atol=1e-6, rtol=0)


def test_bias_terms_are_refused_for_a_model_that_ignores_them():
    with pytest.raises(ValueError, match=r"model.bias_terms: not read by model type 'din'"):
        model_config("din", bias_terms=True)


def test_metagr_needs_matching_widths():
    cfg = _config()
    cfg.interaction.d_model = 2 * D
    with pytest.raises(ValueError, match="d_model"):
        MetaGRRankingModel(cfg)


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("mode", list(MaskMode))
@pytest.mark.parametrize("form", list(AttentionForm))
def test_tiled_kernel_trains_like_the_padded_kernel(cls, mode, form, monkeypatch):
    """Same weights, same batch: the tiled backend (tiles smaller than the sequences) gives the
    padded backend's logits, loss and every parameter gradient."""
    from dfgr_torchrec.ops import tiled

    monkeypatch.setattr(tiled, "DEFAULT_TILE", 5)
    padded = _model(cls, mode, form).train()
    config = _config(mode, form)
    config = dataclasses.replace(config, interaction=dataclasses.replace(config.interaction, kernel="tiled"))
    fast = cls(config).train()
    fast.load_state_dict(padded.state_dict())
    batch = _batch(session_prob=0.4, batch_size=4)
    outs = {}
    for name, model in (("padded", padded), ("tiled", fast)):
        out = model(batch)
        out.loss.backward()
        outs[name] = out
    torch.testing.assert_close(outs["tiled"].logits, outs["padded"].logits, atol=1e-5, rtol=1e-5)
    for (name, p), q in zip(padded.named_parameters(), fast.parameters()):
        if p.grad is not None or q.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data").exists(), reason="../shared/data is absent")
@pytest.mark.parametrize("kind", ["dfgr", "metagr"])
def test_a_context_token_trains_through_the_recipe_pipeline(kind, tmp_path):
    """TorchRec's train pipeline traces the forward: the context-token helpers must stay leaves."""
    from dfgr_torchrec.recipes.config import load_train_config
    from dfgr_torchrec.recipes.train import TrainRecipe

    config = load_train_config(
        str(ROOT / "configs/train/debug.yaml"),
        [
            f"model.type={kind}",
            "train.max_steps=2",
            f"output_dir={tmp_path}",
            "data.user_id=true",
            "model.embeddings.user_context=token",
            "model.bias_terms=true",
            f"data.config={ROOT / 'configs/data/kuairand-sample.yaml'}",
        ],
    )
    recipe = TrainRecipe(config)
    try:
        recipe.setup()
        metrics = recipe.train()
    finally:
        recipe.cleanup()
    assert recipe.state.step == 2 and metrics["candidates"] > 0


def _repeating(batch: SequenceBatch, rows: int = 5) -> SequenceBatch:
    """``batch`` with item ids folded onto ``rows`` rows, so items repeat within every history."""
    for key in (ITEM_FEATURE, "cand_item_id"):
        batch = _replace_values(batch, key, batch.features[key].values() % rows)
    return batch


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("mode", list(MaskMode))
@pytest.mark.parametrize("user_context", [None, "token"])
def test_the_repeat_feature_keeps_training_equal_to_inference(cls, mode, user_context):
    model = _model(cls, mode, repeat=True, user_context=user_context)
    batch = _repeating(_batch(session_prob=0.4))
    if user_context is not None:
        batch = with_user_ids(batch)
    _assert_training_equals_inference(model, batch, mode)


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("mode", list(MaskMode))
def test_the_repeat_feature_never_reads_an_own_or_later_action(cls, mode):
    model, batch = _model(cls, mode, repeat=True), _repeating(_batch(session_prob=0.5 if mode == "session" else 0.0))
    times = batch.timestamps
    offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(batch.history_lengths).tolist()
    with torch.no_grad():
        base = model(batch).logits
        s, e = offsets[0], offsets[1]
        for i in range(s, e):
            out = model(_flip_actions(batch, [i])).logits
            unaffected = [j for j in range(s, e) if (times[j] <= times[i] if mode == MaskMode.SESSION else j <= i)]
            torch.testing.assert_close(out[unaffected], base[unaffected], atol=0, rtol=0)


def test_the_repeat_feature_changes_the_scores_of_repeated_items_only():
    """DFGR: only fake tokens and candidates carry it (MetaGR's history item tokens carry it too)."""
    model, batch = _model(DFGRRankingModel, repeat=True), _repeating(_batch())
    with torch.no_grad():
        on = model.score_candidates(batch).values()
        model.repeat.embedding.action.weight[1:] = model.repeat.embedding.action.weight[0]
        model.repeat.embedding.gap.weight[1:] = model.repeat.embedding.gap.weight[0]
        off = model.score_candidates(batch).values()
    c_users = torch.repeat_interleave(torch.arange(batch.candidate_lengths.numel()), batch.candidate_lengths)
    h_users = torch.repeat_interleave(torch.arange(batch.history_lengths.numel()), batch.history_lengths)
    items, cands = batch.features[ITEM_FEATURE].values(), batch.features["cand_item_id"].values()
    seen = torch.tensor([bool(((items == c) & (h_users == u)).any()) for c, u in zip(cands.tolist(), c_users.tolist())])
    assert seen.any() and (~seen).any()
    torch.testing.assert_close(on[~seen], off[~seen], atol=0, rtol=0)
    assert not torch.allclose(on[seen], off[seen])


def test_the_repeat_feature_is_refused_for_a_model_that_ignores_it():
    with pytest.raises(ValueError, match="embeddings.repeat_feature"):
        retype(_config(repeat=True), "din")


@pytest.mark.parametrize("kind", ["dcn", "dlrm", "deepfm"])
@pytest.mark.parametrize("mode", list(MaskMode))
def test_the_pointwise_baselines_take_the_repeat_feature_alike_in_training_and_scoring(kind, mode):
    from dfgr_torchrec.models import MODELS as REGISTRY

    torch.manual_seed(0)
    model = REGISTRY[kind](retype(_config(mode, repeat=True), kind))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    batch = _repeating(_batch(session_prob=0.4))
    _assert_training_equals_inference(model, batch, mode)
    with torch.no_grad():
        on = model.score_candidates(batch).values()
        model.repeat.embedding.action.weight.zero_()
        model.repeat.embedding.gap.weight.zero_()
        assert not torch.allclose(on, model.score_candidates(batch).values())
