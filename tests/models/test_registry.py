"""The model registry: a new model type is one module plus one entry, trained by the same recipe."""

import json
import pathlib

import pytest
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.config import MODEL_TYPES, RankingModelConfig, SequenceEmbeddingConfig
from dfgr_torchrec.models import MODELS, build_model, register_model
from dfgr_torchrec.models.output import RankingOutput
from dfgr_torchrec.modules.embeddings import SequenceEmbedding
from dfgr_torchrec.modules.heads import MultiTaskBCELoss
from dfgr_torchrec.recipes.config import load_train_config
from dfgr_torchrec.recipes.train import TrainRecipe

ROOT = pathlib.Path(__file__).resolve().parents[2]


class ItemOnlyRanker(nn.Module):
    """A toy ranker: a linear head on the item embedding, blind to the history."""

    def __init__(self, config: RankingModelConfig, device=None) -> None:
        super().__init__()
        self.embedding = SequenceEmbedding(config.embeddings, device=device)
        self.head = nn.Linear(config.embeddings.embedding_dim, len(config.tasks), device=device)
        self.loss = MultiTaskBCELoss([t.weight for t in config.tasks])

    def forward(self, batch) -> RankingOutput:
        logits = self.head(self.embedding(batch.features).items.values())
        loss, task_losses = self.loss(logits, batch.labels)
        return RankingOutput(loss=loss, task_losses=task_losses, logits=logits, labels=batch.labels)

    def score_candidates(self, batch) -> JaggedTensor:
        candidates = self.embedding(batch.features).candidates
        return JaggedTensor(values=self.head(candidates.values()), lengths=candidates.lengths())


@pytest.fixture
def toy_type():
    register_model("item_only", ItemOnlyRanker)
    yield "item_only"
    del MODELS["item_only"], MODEL_TYPES["item_only"]


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data").exists(), reason="../shared/data is absent")
def test_a_registered_toy_model_trains_one_step_through_the_recipe(toy_type, tmp_path):
    config = load_train_config(
        str(ROOT / "configs/train/debug.yaml"),
        [
            f"model.type={toy_type}",
            "train.max_steps=1",
            f"output_dir={tmp_path}",
            f"data.config={ROOT / 'configs/data/kuairand-sample.yaml'}",
        ],
    )
    recipe = TrainRecipe(config)
    try:
        recipe.setup()
        assert isinstance(recipe.dmp.module, ItemOnlyRanker)
        before = recipe.dmp.module.head.weight.detach().clone()
        metrics = recipe.train()
    finally:
        recipe.cleanup()
    assert recipe.state.step == 1
    assert not torch.equal(before, recipe.dmp.module.head.weight.detach())  # the step updated it
    written = json.loads((tmp_path / "debug" / "metrics_final.json").read_text())
    assert written["candidates"] == metrics["candidates"] > 0 and set(written["tasks"]) == set(recipe.data.tasks)


def test_unknown_and_conflicting_types_are_refused(toy_type):
    with pytest.raises(ValueError, match=r"model\.type: expected one of .*'item_only'.*got 'bert'"):
        build_model(RankingModelConfig(type="bert"))
    with pytest.raises(ValueError, match="already registered"):
        register_model("item_only", nn.Linear)
    with pytest.raises(ValueError, match=r"model\.type"):
        load_train_config(str(ROOT / "configs/train/debug.yaml"), ["model.type=bert"])


def test_the_registry_is_the_builtin_table():
    """One table (config.BUILTIN_MODELS) names every built-in type for the registry and for the
    torch-free config check; nothing else lists them."""
    from dfgr_torchrec.config import BUILTIN_MODELS

    for name, path in BUILTIN_MODELS.items():
        assert MODELS[name].__name__ == path.split(":")[1]
    with pytest.raises(ValueError, match="model.type"):
        build_model(RankingModelConfig(type="nope", embeddings=SequenceEmbeddingConfig(item_vocab_size=5)))


def test_a_config_validates_the_same_whatever_is_imported(monkeypatch):
    """One torch-free registry (``config.MODEL_TYPES``): the command line, which never imports the
    models, and the recipe, which does, accept the same types, registered ones included."""
    from dfgr_torchrec import config
    from dfgr_torchrec.recipes.config import load_train_config

    with pytest.raises(ValueError, match=r"model\.type: expected one of \[.*'dfgr'.*\], got 'item_only'"):
        load_train_config("configs/train/debug.yaml", ["model.type=item_only"])
    monkeypatch.setitem(MODELS, "item_only", ItemOnlyRanker)
    monkeypatch.setitem(config.MODEL_TYPES, "item_only", ItemOnlyRanker)
    assert load_train_config("configs/train/debug.yaml", ["model.type=item_only"]).model.type == "item_only"
