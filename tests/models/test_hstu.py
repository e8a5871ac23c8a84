"""``hstu`` (Meta's HSTU ranking model): who sees what, training equals inference, it learns, it trains in the recipe."""

import dataclasses
import json
import pathlib
import time

import pytest
import torch
from torchrec import KeyedJaggedTensor

from dfgr_torchrec.batch import SequenceBatch, make_sequence_batch
from dfgr_torchrec.config import (
    MODEL_TYPES,
    InteractionConfig,
    MaskMode,
    RankingModelConfig,
    SequenceEmbeddingConfig,
    TaskConfig,
    UserContext,
    retype,
)
from dfgr_torchrec.data.synthetic_batches import SyntheticSequences
from dfgr_torchrec.features import ACTION_FEATURE, ITEM_FEATURE, candidate_feature
from dfgr_torchrec.metrics import auc
from dfgr_torchrec.models import MODELS, register_model
from dfgr_torchrec.models.hstu import HSTUModel
from dfgr_torchrec.modules.stu import split_training_targets
from tests.models.users import USER_FEATURE, with_user_feature, with_user_ids

ROOT = pathlib.Path(__file__).resolve().parents[2]
NUM_ITEMS, NUM_TASKS, D = 200, 2, 16
NUM_TARGETS = 3


def _config(mode=MaskMode.POSITION, num_items=NUM_ITEMS, num_tasks=NUM_TASKS, d=D, layers=2):
    return RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(
            item_vocab_size=num_items, action_vocab_sizes={ACTION_FEATURE: 2**num_tasks}, embedding_dim=d
        ),
        interaction=InteractionConfig(
            d_model=d,
            num_layers=layers,
            num_heads=2,
            attention_dim=8,
            linear_dim=8,
            mask_mode=mode,
            max_seq_len=32,
            num_time_buckets=16,
        ),
        tasks=[TaskConfig(f"task{t}") for t in range(num_tasks)],
        head_hidden_dims=[d],
    )


def _model(mode=MaskMode.POSITION, user_context=None):
    torch.manual_seed(0)
    config = _config(mode) if user_context is None else with_user_feature(_config(mode), user_context)
    model = HSTUModel(config, num_targets=NUM_TARGETS)
    with torch.no_grad():  # large random weights, so that a leak would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _batch(session_prob=0.3, seed=0, batch_size=4, min_len=1, max_len=12):
    world = SyntheticSequences(num_items=NUM_ITEMS, num_tasks=NUM_TASKS, session_prob=session_prob, seed=1)
    return world.batch(batch_size, min_len, max_len, 4, torch.Generator().manual_seed(seed))


def _with_values(batch: SequenceBatch, key: str, values: torch.Tensor) -> SequenceBatch:
    kjt = batch.features
    per_key = kjt.to_dict()
    new_values = torch.cat([values if k == key else per_key[k].values() for k in kjt.keys()])
    features = KeyedJaggedTensor.from_lengths_sync(keys=kjt.keys(), values=new_values, lengths=kjt.lengths())
    return dataclasses.replace(batch, features=features)


def _change_history(batch: SequenceBatch, rows, items: bool = True) -> SequenceBatch:
    """Another action (and, with ``items``, another item) at the given history rows."""
    actions = batch.features[ACTION_FEATURE].values().clone()
    actions[rows] = (actions[rows] + 1) % (2**NUM_TASKS)
    batch = _with_values(batch, ACTION_FEATURE, actions)
    if not items:
        return batch
    item_ids = batch.features[ITEM_FEATURE].values().clone()
    item_ids[rows] = (item_ids[rows] + 17) % NUM_ITEMS
    return _with_values(batch, ITEM_FEATURE, item_ids)


def _target_rows(batch: SequenceBatch, num_targets=NUM_TARGETS, context_token=False):
    """Per user, the history rows that become training targets (the window's last ones); a
    context token counts as one more history row, which is never a target."""
    lengths = batch.history_lengths
    offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(lengths).tolist()
    counts = split_training_targets(lengths + int(context_token), num_targets).tolist()
    return [list(range(offsets[u + 1] - counts[u], offsets[u + 1])) for u in range(len(counts))], offsets


def test_shapes_finite_loss_and_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model, batch = HSTUModel(_config(), num_targets=NUM_TARGETS), _batch()
    out = model(batch)
    rows, _ = _target_rows(batch)
    flat = [r for user in rows for r in user]
    assert out.logits.shape == (len(flat), NUM_TASKS) and torch.equal(out.labels, batch.labels[flat])
    assert out.loss.ndim == 0 and torch.isfinite(out.loss) and out.task_losses.shape == (NUM_TASKS,)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing
    scores = model.score_candidates(batch)
    assert scores.values().shape == (int(batch.candidate_lengths.sum()), NUM_TASKS)
    assert torch.equal(scores.lengths(), batch.candidate_lengths)


@pytest.mark.parametrize("mode", list(MaskMode))
def test_targets_never_see_their_own_or_another_targets_action_or_label(mode):
    model, batch = _model(mode), _batch(session_prob=0.4)
    rows, offsets = _target_rows(batch)
    with torch.no_grad():
        base = model(batch).logits
        for target in [r for user in rows for r in user]:
            labels = batch.labels.clone()
            labels[target] = 1.0 - labels[target]
            changed = dataclasses.replace(_change_history(batch, [target], items=False), labels=labels)
            torch.testing.assert_close(model(changed).logits, base, atol=0, rtol=0)  # no target moves, earlier or later
        # ...but the history's actions are read: changing one moves its user's targets
        moved = 0
        for user, user_rows in enumerate(rows):
            history = [r for r in range(offsets[user], offsets[user + 1]) if r not in user_rows]
            if history:
                out = model(_change_history(batch, history[:1])).logits
                moved += int(not torch.allclose(out, base))
        assert moved > 0


def test_session_targets_see_only_earlier_sessions_of_the_history():
    model, batch = _model(MaskMode.SESSION), _batch(session_prob=0.7, batch_size=6, min_len=4)
    rows, offsets = _target_rows(batch)
    times = batch.timestamps
    checked = 0
    with torch.no_grad():
        base = model(batch).logits
        flat = [r for user in rows for r in user]
        for user, user_rows in enumerate(rows):
            history = [r for r in range(offsets[user], offsets[user + 1]) if r not in user_rows]
            for r in history:
                out = model(_change_history(batch, [r])).logits
                for index, target in enumerate(flat):
                    if target in user_rows and times[r] >= times[target]:  # same session: invisible
                        torch.testing.assert_close(out[index], base[index], atol=0, rtol=0)
                        checked += 1
    assert checked > 0, "the batch should hold a session straddling the history/target boundary"


@pytest.mark.parametrize("mode", list(MaskMode))
def test_a_candidates_score_is_independent_of_the_other_candidates(mode):
    model, batch = _model(mode), _batch()
    key = candidate_feature(ITEM_FEATURE)
    cand_items = batch.features[key].values()
    with torch.no_grad():
        base = model.score_candidates(batch).values()
        for c in range(cand_items.numel()):
            others = cand_items.clone()
            others[torch.arange(others.numel()) != c] = (others[torch.arange(others.numel()) != c] + 31) % NUM_ITEMS
            out = model.score_candidates(_with_values(batch, key, others)).values()
            torch.testing.assert_close(out[c], base[c], atol=1e-6, rtol=1e-6)
            own = cand_items.clone()
            own[c] = (own[c] + 31) % NUM_ITEMS
            assert not torch.allclose(model.score_candidates(_with_values(batch, key, own)).values()[c], base[c])


def test_session_candidates_never_see_history_at_or_after_their_time():
    model, batch = _model(MaskMode.SESSION), _batch(session_prob=0.3, batch_size=3, min_len=6)
    h_off = torch.ops.fbgemm.asynchronous_complete_cumsum(batch.history_lengths).tolist()
    c_off = torch.ops.fbgemm.asynchronous_complete_cumsum(batch.candidate_lengths).tolist()
    g = torch.Generator().manual_seed(3)
    times = batch.candidate_timestamps.clone()
    for u in range(len(h_off) - 1):  # requests in the middle of the history
        picks = torch.randint(h_off[u], h_off[u + 1], (c_off[u + 1] - c_off[u],), generator=g)
        times[c_off[u] : c_off[u + 1]] = batch.timestamps[picks]
    batch = dataclasses.replace(batch, candidate_timestamps=times)
    seen = unseen = 0
    with torch.no_grad():
        base = model.score_candidates(batch).values()
        for u in range(len(h_off) - 1):
            for r in range(h_off[u], h_off[u + 1]):
                out = model.score_candidates(_change_history(batch, [r])).values()
                for c in range(c_off[u], c_off[u + 1]):
                    if batch.timestamps[r] >= times[c]:
                        torch.testing.assert_close(out[c], base[c], atol=0, rtol=0)
                        unseen += 1
                    else:
                        seen += int(not torch.allclose(out[c], base[c]))
    assert unseen > 0 and seen > 0


def _resplit(batch: SequenceBatch, context_token=False) -> SequenceBatch:
    """The training batch as an inference batch: history = the window's head, candidates = its targets."""
    rows, offsets = _target_rows(batch, context_token=context_token)
    items, actions = batch.features[ITEM_FEATURE].values().tolist(), batch.features[ACTION_FEATURE].values().tolist()
    times, labels = batch.timestamps.tolist(), batch.labels.tolist()
    head = [list(range(offsets[u], user[0] if user else offsets[u + 1])) for u, user in enumerate(rows)]
    pick = lambda values, per_user: [[values[r] for r in user] for user in per_user]  # noqa: E731
    users = {}
    if USER_FEATURE in batch.features.keys():
        users = {USER_FEATURE: [[u] for u in batch.features[USER_FEATURE].values().tolist()]}
    return make_sequence_batch(
        history={ITEM_FEATURE: pick(items, head), ACTION_FEATURE: pick(actions, head), **users},
        timestamps=pick(times, head),
        labels=pick(labels, head),
        candidates={ITEM_FEATURE: pick(items, rows)},
        candidate_timestamps=pick(times, rows),
        candidate_labels=pick(labels, rows),
        num_tasks=NUM_TASKS,
    )


@pytest.mark.parametrize("mode", list(MaskMode))
@pytest.mark.parametrize("user_context", [None, UserContext.ADD, UserContext.TOKEN])
def test_training_prediction_equals_inference_score(mode, user_context):
    model, batch = _model(mode, user_context), _batch(session_prob=0.4)
    if user_context is not None:
        batch = with_user_ids(batch)
    context_token = user_context == UserContext.TOKEN
    with torch.no_grad():
        train = model(batch)
        inference = model.score_candidates(_resplit(batch, context_token))
    rows = [r for user in _target_rows(batch, context_token=context_token)[0] for r in user]
    torch.testing.assert_close(train.labels, batch.labels[rows], atol=0, rtol=0)
    torch.testing.assert_close(inference.values(), train.logits, atol=1e-5, rtol=1e-5)


def test_a_context_token_carries_the_user_and_is_never_a_target():
    model = _model(user_context=UserContext.TOKEN)
    batch = _batch(min_len=1, max_len=2)  # short windows: every interaction becomes a target
    ids = with_user_ids(batch), with_user_ids(batch, [5] * batch.history_lengths.numel())
    with torch.no_grad():
        outs = [model(b) for b in ids]
    assert outs[0].labels.shape[0] == int(batch.history_lengths.sum())  # the context stays history
    assert bool(((outs[0].logits - outs[1].logits).abs().amax(dim=1) > 1e-6).all())


@pytest.mark.slow
def test_it_learns_the_planted_signal():
    """Held-out candidate AUC well above 0.5 after a few hundred Adam steps on synthetic sequences."""
    start = time.monotonic()
    world = SyntheticSequences(num_items=300, num_tasks=1, latent_dim=4, affinity_scale=4.0, seed=0)
    torch.manual_seed(0)
    model = HSTUModel(_config(num_items=300, num_tasks=1, d=32, layers=1), num_targets=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        loss = model(world.batch(32, 16, 24, 0, g)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    held_out = world.batch(512, 16, 24, 4, torch.Generator().manual_seed(12345))
    with torch.no_grad():
        scores = model.eval().score_candidates(held_out).values()
    score = auc(scores[:, 0], held_out.candidate_labels[:, 0])
    # the true item biases alone (no history) reach ~0.56: the model reads the user's past actions
    popularity = auc(
        world.item_bias[held_out.features[candidate_feature(ITEM_FEATURE)].values(), 0], held_out.candidate_labels[:, 0]
    )
    assert score > 0.7 and score > popularity + 0.1, (score, popularity, time.monotonic() - start)


@pytest.fixture
def hstu_type():
    registered = "hstu" in MODELS
    register_model("hstu", HSTUModel)
    yield "hstu"
    if not registered:
        del MODELS["hstu"], MODEL_TYPES["hstu"]


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data").exists(), reason="../shared/data is absent")
@pytest.mark.parametrize("users", [[], ["data.user_id=true", "model.embeddings.user_context=token"]], ids=["", "token"])
def test_one_training_step_through_the_recipe(hstu_type, tmp_path, users):
    """Through TorchRec's train pipeline, which traces the model's forward."""
    from dfgr_torchrec.recipes.config import load_train_config
    from dfgr_torchrec.recipes.train import TrainRecipe

    config = load_train_config(
        str(ROOT / "configs/train/debug.yaml"),
        [
            f"model.type={hstu_type}",
            "train.max_steps=1",
            f"output_dir={tmp_path}",
            f"data.config={ROOT / 'configs/data/kuairand-sample.yaml'}",
            *users,
        ],
    )
    recipe = TrainRecipe(config)
    try:
        recipe.setup()
        model = recipe.dmp.module
        assert isinstance(model, HSTUModel)
        weight = model.interaction.stack.layers[0].output_weight
        before = weight.detach().clone()
        metrics = recipe.train()
    finally:
        recipe.cleanup()
    assert recipe.state.step == 1
    assert not torch.equal(before, weight.detach())  # the step updated the STU
    written = json.loads((tmp_path / "debug" / "metrics_final.json").read_text())
    assert written["candidates"] == metrics["candidates"] > 0 and set(written["tasks"]) == set(recipe.data.tasks)


def test_num_targets_comes_from_the_yaml_and_belongs_to_hstu():
    from dfgr_torchrec.recipes.config import load_train_config

    path = str(pathlib.Path(__file__).resolve().parents[2] / "configs/train/dfgr_movielens.yaml")
    config = load_train_config(path, ["model.type=hstu", "model.num_targets=3"])
    assert config.model.num_targets == 3
    assert HSTUModel(dataclasses.replace(retype(_config(), "hstu"), num_targets=3)).num_targets == 3
    assert HSTUModel(retype(_config(), "hstu")).num_targets == 8  # Meta's default
    with pytest.raises(ValueError, match=r"model.num_targets: not read by model type 'dfgr'"):
        load_train_config(path, ["model.num_targets=3"])
    with pytest.raises(ValueError, match="num_targets: expected a positive integer or null, got 0"):
        load_train_config(path, ["model.type=hstu", "model.num_targets=0"])
