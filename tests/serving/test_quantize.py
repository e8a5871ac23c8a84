"""Int8 tables: lookups within the row-wise int8 step of fp32, scores close, tables smaller."""

import pytest
import torch
from torchrec import EmbeddingCollection, KeyedJaggedTensor
from torchrec.quant.embedding_modules import EmbeddingCollection as QuantEmbeddingCollection

from dfgr_torchrec.batch import make_sequence_batch
from dfgr_torchrec.config import InteractionConfig, RankingModelConfig, SequenceEmbeddingConfig, TaskConfig
from dfgr_torchrec.models import build_model
from dfgr_torchrec.serving.quantize import quantize_collection, quantize_tables, table_bytes


def _model():
    torch.manual_seed(0)
    config = RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(item_vocab_size=50, action_vocab_sizes={"action": 4}, embedding_dim=16),
        interaction=InteractionConfig(
            d_model=16, num_layers=1, num_heads=1, attention_dim=8, linear_dim=8, max_seq_len=16
        ),
        tasks=[TaskConfig("click"), TaskConfig("like")],
        head_hidden_dims=[8],
    )
    model = build_model(config, device=torch.device("cpu")).eval()
    for table in model.embedding.collection.embeddings.values():
        torch.nn.init.normal_(table.weight, std=0.5)  # trained-like spread, not the tiny init
    return model


def _batch():
    return make_sequence_batch(
        history={"item_id": [[1, 2, 3], [4, 49]], "action": [[0, 3, 1], [2, 2]]},
        timestamps=[[1, 2, 3], [5, 9]],
        labels=[[[0, 0]] * 3, [[0, 0]] * 2],
        candidates={"item_id": [[5, 6], [7]]},
        candidate_timestamps=[[4, 4], [10]],
        candidate_labels=[[[0, 0]] * 2, [[0, 0]]],
        num_tasks=2,
    )


def test_lookups_within_int8_tolerance_of_fp32():
    collection = _model().embedding.collection
    kjt = KeyedJaggedTensor(
        keys=["item_id", "cand_item_id", "action"],
        values=torch.tensor([0, 1, 7, 49, 3, 3, 2, 8, 0, 1, 2, 3]),
        lengths=torch.tensor([4, 4, 4]),
    )
    quantized = quantize_collection(collection)
    fp32, int8 = collection(kjt), quantized(kjt)
    for key in fp32:
        table = collection.embeddings["action" if key == "action" else "item"].weight.detach()
        rows = table[kjt[key].values()]
        step = (rows.max(dim=1).values - rows.min(dim=1).values) / 255  # one int8 step per row
        error = (fp32[key].values() - int8[key].values()).abs().detach()
        assert (error <= step[:, None] * 0.5 + 1e-3).all(), (key, float(error.max()))
        assert float(error.max()) > 0  # really quantized
        assert int8[key].values().dtype == torch.float32


def test_quantized_model_scores_close_and_tables_smaller():
    model = _model()
    with torch.no_grad():
        before = model.score_candidates(_batch()).values()
    fp32_bytes = table_bytes(model)
    assert quantize_tables(model) is model
    assert isinstance(model.embedding.collection, QuantEmbeddingCollection)
    assert not any(type(m) is EmbeddingCollection for m in model.modules())
    with torch.no_grad():
        after = model.score_candidates(_batch()).values()
    assert after.shape == before.shape
    assert torch.allclose(after, before, atol=5e-2) and not torch.equal(after, before)
    assert fp32_bytes == (50 + 4) * 16 * 4
    assert table_bytes(model) < fp32_bytes * 0.6


def test_only_int8_dtypes():
    with pytest.raises(ValueError, match="int8 rows"):
        quantize_collection(_model().embedding.collection, torch.float16)
