"""DIN: target attention over the visible history, vectorised exactly like a per-sample loop."""

import json
import pathlib

import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.batch import make_sequence_batch
from dfgr_torchrec.config import RankingModelConfig, SequenceEmbeddingConfig, TaskConfig
from dfgr_torchrec.data.synthetic_batches import SyntheticSequences
from dfgr_torchrec.metrics import auc
from dfgr_torchrec.models import MODELS, register_model
from dfgr_torchrec.models.din import DINModel, history_pairs
from dfgr_torchrec.modules.embeddings import SequenceEmbeddings
from dfgr_torchrec.modules.pointwise import candidate_samples, training_samples
from dfgr_torchrec.recipes.config import load_train_config
from dfgr_torchrec.recipes.train import TrainRecipe
from tests.modules.conftest import sorted_times_with_sessions

ROOT = pathlib.Path(__file__).resolve().parents[2]
D = 8


def _config(users=None, **model):
    return RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(
            item_vocab_size=50, action_vocab_sizes={"action": 4}, embedding_dim=D, user_vocab_sizes=users or {}
        ),
        tasks=[TaskConfig("a"), TaskConfig("b")],
        head_hidden_dims=[D],
        **model,
    )


# --------------------------------------------------------------------------------------------
# (a) shapes, loss, gradients
# --------------------------------------------------------------------------------------------


def test_forward_scores_the_last_k_interactions_and_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = DINModel(_config(), targets_per_user=16)
    world = SyntheticSequences(num_items=50, num_tasks=2)
    lengths = torch.tensor([0, 5, 30, 20])
    batch = world.batch(4, 0, 0, 3, torch.Generator().manual_seed(0), lengths=lengths)
    out = model(batch)
    assert out.logits.shape == (0 + 5 + 16 + 16, 2) and torch.isfinite(out.loss)
    last = torch.cat([torch.arange(s + max(0, n - 16), s + n) for s, n in zip([0, 0, 5, 35], lengths.tolist())])
    torch.testing.assert_close(out.labels, batch.labels[last])
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    scores = model.score_candidates(batch)
    assert scores.values().shape == (12, 2) and scores.lengths().tolist() == [3, 3, 3, 3]
    assert torch.isfinite(scores.values()).all()


def test_history_pairs_by_hand():
    sample, row = history_pairs(torch.tensor([0, 0, 3, 7]), torch.tensor([0, 5, 2, 1]), max_history=3)
    assert sample.tolist() == [1, 1, 1, 2, 2, 3] and row.tolist() == [2, 3, 4, 3, 4, 7]


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="targets_per_user"):
        DINModel(_config(), targets_per_user=0)
    with pytest.raises(ValueError, match="max_history"):
        DINModel(_config(), max_history=0)


# --------------------------------------------------------------------------------------------
# (b) the vectorised attention equals a per-sample Python loop
# --------------------------------------------------------------------------------------------

LENGTHS = [0, 3, 9, 1]  # a user without history, one longer than L = 4
CANDIDATES = [2, 1, 3, 2]
L = 4


def _embeddings():
    g = torch.Generator().manual_seed(3)
    n, m = sum(LENGTHS), sum(CANDIDATES)
    lengths, c_lengths = torch.tensor(LENGTHS), torch.tensor(CANDIDATES)
    return SequenceEmbeddings(
        items=JaggedTensor(values=torch.randn(n, D, generator=g), lengths=lengths),
        actions=JaggedTensor(values=torch.randn(n, D, generator=g), lengths=lengths),
        candidates=JaggedTensor(values=torch.randn(m, D, generator=g), lengths=c_lengths),
        users=torch.randn(len(LENGTHS), D, generator=g),
    )


def _loop_reference(din, emb, samples):
    """One sample at a time: attend to the last L visible rows, then the output MLP."""
    tokens = emb.items.values() + emb.actions.values()
    starts = [sum(LENGTHS[:b]) for b in range(len(LENGTHS))]
    out = []
    for s in range(samples.target.shape[0]):
        start = starts[int(samples.owner[s])]
        rows = list(range(start, start + int(samples.visible[s])))[-L:]
        t, interest = samples.target[s], torch.zeros(D)
        for j in rows:
            h = tokens[j]
            w = din.activation_unit(torch.cat([t, h, t - h, t * h]).unsqueeze(0))[0, 0]
            interest = interest + w * h
        x = torch.cat([interest, t, samples.user[s], samples.history_items[s], samples.history_actions[s]])
        out.append(din.head(x.unsqueeze(0))[0])
    return torch.stack(out)


@pytest.mark.parametrize("session", [False, True])
def test_vectorised_attention_equals_a_per_sample_loop(session):
    torch.manual_seed(0)
    mode = {"interaction": {"mask_mode": "session"}} if session else {}
    model = DINModel(_config(users={"user_id": 5}, **mode), targets_per_user=2, max_history=L)
    emb, times = _embeddings(), sorted_times_with_sessions(LENGTHS)
    g = torch.Generator().manual_seed(1)
    c_times = torch.randint(int(times.min()), int(times.max()) + 2, (sum(CANDIDATES),), generator=g)
    tokens = JaggedTensor(values=emb.items.values() + emb.actions.values(), lengths=emb.items.lengths())
    with torch.no_grad():
        cands = candidate_samples(emb, times, c_times, session)
        torch.testing.assert_close(model.din.score(cands, tokens), _loop_reference(model.din, emb, cands))
        labels = torch.arange(2 * sum(LENGTHS), dtype=torch.float32).view(-1, 2)
        logits, got_labels = model.din(emb, times, labels)
    starts = [sum(LENGTHS[:b]) for b in range(len(LENGTHS))]
    last = [s + i for s, n in zip(starts, LENGTHS) for i in range(max(0, n - 2), n)]
    assert got_labels.tolist() == labels[last].tolist()
    with torch.no_grad():
        everyone = training_samples(emb, times, session)
        torch.testing.assert_close(logits, _loop_reference(model.din, emb, everyone)[last])
    assert (everyone.visible[last] > L).any() and (cands.visible == 0).any()  # the cap and empty history are hit


# --------------------------------------------------------------------------------------------
# (c) session mode: a candidate sees only what is before it, and never other candidates
# --------------------------------------------------------------------------------------------

HISTORY = {"item_id": [[1, 2, 3, 4, 5], [], [9, 8, 7]], "action": [[1, 2, 3, 0, 1], [], [3, 3, 0]]}
TIMES = [[10, 20, 20, 30, 40], [], [1, 2, 3]]
CANDS = [[6, 7, 8, 9], [3, 4], [1]]
CAND_TIMES = [[20, 30, 35, 50], [5, 5], [4]]


def _batch(history=None, cands=None, cand_times=None):
    history, cands, cand_times = history or HISTORY, cands or CANDS, cand_times or CAND_TIMES
    return make_sequence_batch(
        history=history,
        timestamps=TIMES,
        labels=[[[0.0, 1.0]] * len(t) for t in TIMES],
        candidates={"item_id": cands},
        candidate_timestamps=cand_times,
        candidate_labels=[[[0.0, 0.0]] * len(c) for c in cands],
        num_tasks=2,
    )


def _perturbed(rows):
    """HISTORY with the items and actions of user 0's ``rows`` changed."""
    items, actions = [list(u) for u in HISTORY["item_id"]], [list(u) for u in HISTORY["action"]]
    for j in rows:
        items[0][j], actions[0][j] = 40 + j, (actions[0][j] + 1) % 4
    return {"item_id": items, "action": actions}


def _score(model, history):
    return model.score_candidates(_batch(history)).values()


@pytest.fixture
def session_model():
    torch.manual_seed(0)
    return DINModel(_config(interaction={"mask_mode": "session"}), targets_per_user=None, max_history=L).eval()


def test_a_candidate_ignores_the_other_candidates(session_model):
    with torch.no_grad():
        full = session_model.score_candidates(_batch()).values()
        row = 0
        for u, cands in enumerate(CANDS):
            for c in range(len(cands)):
                # user u keeps only candidate c; the others keep only their first
                alone = [[CANDS[v][c]] if v == u else CANDS[v][:1] for v in range(len(CANDS))]
                alone_times = [[CAND_TIMES[v][c]] if v == u else CAND_TIMES[v][:1] for v in range(len(CANDS))]
                got = session_model.score_candidates(_batch(cands=alone, cand_times=alone_times)).values()
                torch.testing.assert_close(got[u], full[row])
                row += 1


def test_a_candidate_ignores_history_at_or_after_its_time(session_model):
    with torch.no_grad():
        base = _score(session_model, HISTORY)
        for c, t in enumerate(CAND_TIMES[0]):
            later = [j for j, tj in enumerate(TIMES[0]) if tj >= t]
            earlier = [j for j, tj in enumerate(TIMES[0]) if tj < t]
            if later:
                torch.testing.assert_close(_score(session_model, _perturbed(later))[c], base[c])
            assert not torch.allclose(_score(session_model, _perturbed(earlier))[c], base[c])  # it does see those


def test_a_training_target_ignores_its_session_and_what_follows(session_model):
    with torch.no_grad():
        base = session_model(_batch()).logits
        for i, t in enumerate(TIMES[0]):
            hidden = [j for j, tj in enumerate(TIMES[0]) if tj >= t and j != i]
            history = _perturbed(hidden)
            history["action"][0][i] = (HISTORY["action"][0][i] + 2) % 4  # its own action is its label
            torch.testing.assert_close(session_model(_batch(history)).logits[i], base[i])


# --------------------------------------------------------------------------------------------
# (d) it learns the planted user-item affinity, not only item popularity
# --------------------------------------------------------------------------------------------


def test_it_learns_from_the_history():
    torch.manual_seed(0)
    world = SyntheticSequences(num_items=50, num_tasks=2, seed=0)
    model = DINModel(_config())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        loss = model(world.batch(32, 5, 30, 0, g)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    batch = world.batch(256, 20, 40, 8, torch.Generator().manual_seed(2))
    with torch.no_grad():
        scores = model.score_candidates(batch).values()
    popularity = world.item_bias[batch.features["cand_item_id"].values()]  # the planted item bias
    for t in range(2):
        labels = batch.candidate_labels[:, t]
        learned, items_only = auc(scores[:, t], labels), auc(popularity[:, t], labels)
        assert learned > 0.65 and learned > items_only + 0.05, (t, learned, items_only)


# --------------------------------------------------------------------------------------------
# (e) one step through the real recipe, sharded and pipelined
# --------------------------------------------------------------------------------------------


@pytest.fixture
def din_type():
    added = "din" not in MODELS
    if added:
        register_model("din", DINModel)
    yield "din"
    if added:
        del MODELS["din"]


def _recipe(din_type, tmp_path, *overrides):
    return TrainRecipe(
        load_train_config(
            str(ROOT / "configs/train/debug.yaml"),
            [
                f"model.type={din_type}",
                f"output_dir={tmp_path}",
                f"data.config={ROOT / 'configs/data/kuairand-sample.yaml'}",
                *overrides,
            ],
        )
    )


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data").exists(), reason="../shared/data is absent")
def test_din_trains_one_step_through_the_recipe(din_type, tmp_path):
    recipe = _recipe(din_type, tmp_path, "train.max_steps=1", "train.pipeline=sparse_dist")
    try:
        recipe.setup()
        model = recipe.dmp.module
        assert isinstance(model, DINModel)
        before = model.din.activation_unit[0].weight.detach().clone()
        metrics = recipe.train()
    finally:
        recipe.cleanup()
    assert recipe.state.step == 1
    assert not torch.equal(before, model.din.activation_unit[0].weight.detach())  # the step updated it
    written = json.loads((tmp_path / "debug" / "metrics_final.json").read_text())
    assert written["candidates"] == metrics["candidates"] > 0 and set(written["tasks"]) == set(recipe.data.tasks)


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data").exists(), reason="../shared/data is absent")
def test_sparse_dist_pipeline_trains_din_like_the_base_loop(din_type, tmp_path):
    """TorchRec's pipeline traces DIN's forward (session mode too) and trains it like the plain loop."""
    finals = []
    for pipeline in ("sparse_dist", "base"):
        out = tmp_path / pipeline
        overrides = ("train.max_steps=6", f"train.pipeline={pipeline}", "model.interaction.mask_mode=session")
        recipe = _recipe(din_type, out, *overrides)
        try:
            recipe.setup()
            recipe.train()
        finally:
            recipe.cleanup()
        finals.append(json.loads((out / "debug" / "metrics_final.json").read_text())["tasks"])
    for task in finals[0]:
        assert finals[0][task]["logloss"] == pytest.approx(finals[1][task]["logloss"], abs=1e-5)
