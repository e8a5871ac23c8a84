"""Int8 embedding tables for CPU inference: TorchRec's quantized ``EmbeddingCollection``.

Each table row is stored as int8 codes with its own scale and bias (fbgemm's row-wise
quantization); lookups return float32, so the rest of the model is unchanged.

Example::

    model = load_model_for_inference(config, "runs/demo-movielens/best")
    before = table_bytes(model)
    quantize_tables(model)                       # in place; returns the model
    logits = model.score_candidates(batch)       # lookups dequantized on the fly
"""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.quantization import PlaceholderObserver, QConfig
from torchrec import EmbeddingCollection
from torchrec.quant.embedding_modules import EmbeddingCollection as QuantEmbeddingCollection

QUANT_DTYPES = (torch.qint8, torch.quint8)


def quantize_collection(collection: EmbeddingCollection, dtype: torch.dtype = torch.qint8) -> QuantEmbeddingCollection:
    """A quantized inference copy of a float (unsharded, CPU) ``EmbeddingCollection``."""
    if dtype not in QUANT_DTYPES:
        raise ValueError(f"dtype: expected one of {QUANT_DTYPES} (int8 rows), got {dtype}")
    collection.qconfig = QConfig(activation=PlaceholderObserver, weight=PlaceholderObserver.with_args(dtype=dtype))
    try:
        return QuantEmbeddingCollection.from_float(collection)
    finally:
        del collection.qconfig


def quantize_tables(model: nn.Module, dtype: torch.dtype = torch.qint8) -> nn.Module:
    """Replaces every float ``EmbeddingCollection`` of ``model`` by its int8 copy; returns ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is EmbeddingCollection:
                setattr(parent, name, quantize_collection(child, dtype))
    return model


def table_bytes(model: nn.Module) -> int:
    """Bytes of every embedding table of ``model`` (float or quantized, scales and biases included)."""
    total = 0
    for module in model.modules():
        if isinstance(module, (EmbeddingCollection, QuantEmbeddingCollection)):
            total += sum(t.numel() * t.element_size() for t in module.state_dict().values())
    return total
