"""Shard a ranking model: model-parallel embedding tables, data-parallel dense layers.

Example::

    model = DFGRRankingModel(config, device=torch.device("meta"))
    dmp = shard_model(model, {"item": "row_wise", "action": "table_wise"}, torch.device("cpu"))
    optimizer = combined_optimizer(dmp, dense_optimizer(dmp, lr=1e-3))
    dmp(batch).loss.backward()   # the fused sparse optimizer updates the tables in backward
    optimizer.step()             # AdamW on the dense parameters
"""

from __future__ import annotations

import warnings
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torchrec import EmbeddingCollection
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import KernelConfig, ParameterConstraints, TopologyFactory, TrainerConfig
from torchrec.distributed.types import ShardingType
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from dfgr_torchrec.features import USER_FEATURE, is_candidate_feature

SHARDING_TYPES = {
    "row_wise": ShardingType.ROW_WISE,
    "table_wise": ShardingType.TABLE_WISE,
    "column_wise": ShardingType.COLUMN_WISE,
    "table_row_wise": ShardingType.TABLE_ROW_WISE,
}
WEIGHT_DECAY_MODES = {"decoupled": "DECOUPLE", "l2": "L2"}  # ours -> fbgemm's WeightDecayMode
SPARSE_OPTIMIZERS = {
    "row_wise_adagrad": RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,  # fused Adam exists in the CUDA kernels only
}


def sharding_constraints(
    table_sharding: Mapping[str, str], pooling_factors: Optional[Mapping[str, List[float]]] = None
) -> Dict[str, ParameterConstraints]:
    """``{table: "row_wise" | "table_wise" | ...}`` -> planner constraints for those tables.

    ``pooling_factors`` (ids looked up per sample, per feature of the table: the mean sequence
    length for sequence features) lets the planner cost the tables from the real data.
    """
    constraints = {}
    pooling_factors = pooling_factors or {}
    for table, kind in table_sharding.items():
        if kind not in SHARDING_TYPES:
            raise ValueError(f"sharding.{table}: expected one of {sorted(SHARDING_TYPES)}, got {kind!r}")
        extra = {"pooling_factors": list(pooling_factors[table])} if table in pooling_factors else {}
        constraints[table] = ParameterConstraints(sharding_types=[SHARDING_TYPES[kind].value], **extra)
    return constraints


def _embedding_collections(model: nn.Module) -> Iterator[EmbeddingCollection]:
    return (m for m in model.modules() if isinstance(m, EmbeddingCollection))


def shard_model(
    model: nn.Module,
    table_sharding: Mapping[str, str],
    device: torch.device,
    pg: Optional[dist.ProcessGroup] = None,
    sparse_optimizer: str = "row_wise_adagrad",
    sparse_lr: float = 0.01,
    pooling_factors: Optional[Mapping[str, List[float]]] = None,
    sparse_weight_decay: float = 0.0,
    sparse_weight_decay_mode: str = "decoupled",
) -> DistributedModelParallel:
    """Plans and applies sharding; the tables get a fused optimizer applied in backward.

    Args:
        model: a model built on ``device="meta"`` (DMP allocates it).
        table_sharding: sharding type per table name (tables not named are left to the planner).
        device: this rank's device.
        pg: the process group (default: the world).
        sparse_optimizer: ``row_wise_adagrad``, ``adagrad``, ``sgd``, or ``adam`` (GPU only).
        sparse_lr: learning rate of the fused optimizer.
        pooling_factors: per table, the mean ids per sample of each of its features.
        sparse_weight_decay: weight decay of the rows a batch looks up (sparse: untouched rows
            keep their values), applied by the fused kernel.
        sparse_weight_decay_mode: ``decoupled`` (``w -= lr * wd * w``, AdamW-style) or ``l2``
            (``wd * w`` added to the gradient, so Adagrad normalises it too).
    """
    if sparse_optimizer not in SPARSE_OPTIMIZERS:
        raise ValueError(f"sparse_optimizer: expected one of {sorted(SPARSE_OPTIMIZERS)}, got {sparse_optimizer!r}")
    if sparse_optimizer == "adam" and device.type != "cuda":
        raise ValueError("sparse_optimizer: 'adam' is fused on GPU only; on CPU use row_wise_adagrad, adagrad or sgd")
    pg = pg or dist.GroupMember.WORLD
    tables = {t.name for ec in _embedding_collections(model) for t in ec.embedding_configs()}
    unknown = sorted(set(table_sharding) - tables)
    if unknown:
        raise ValueError(f"sharding: unknown table(s) {unknown}; the model has {sorted(tables)}")
    kwargs = sparse_optimizer_kwargs(sparse_lr, sparse_weight_decay, sparse_weight_decay_mode)
    for ec in _embedding_collections(model):
        # Without this the fused kernel would still apply plain SGD (lr 0.01) silently.
        apply_optimizer_in_backward(SPARSE_OPTIMIZERS[sparse_optimizer], ec.parameters(), kwargs)
    planner = make_planner(
        model, dist.get_world_size(pg), device, sharding_constraints(table_sharding, pooling_factors)
    )
    sharders = [EmbeddingCollectionSharder()]
    plan = planner.collective_plan(model, sharders, pg)
    # Not TorchRec's default static graph: in that mode DDP syncs gradients only through the tensors
    # it finds in the forward's output, and a RankingOutput (a dataclass) shows it none, so the
    # replicas' gradients were never averaged. Plain DDP averages every parameter's gradient.
    wrapper = DefaultDataParallelWrapper(static_graph=False)
    return DistributedModelParallel(
        module=model, device=device, plan=plan, sharders=sharders, data_parallel_wrapper=wrapper
    )


def make_planner(
    model: nn.Module, world_size: int, device: torch.device, constraints: Dict[str, ParameterConstraints]
) -> EmbeddingShardingPlanner:
    """The planner, built the way TorchRec recommends: the topology from ``TopologyFactory`` and the
    storage reservation of :func:`storage_reservation`."""
    topology = TopologyFactory.create_topology(
        TrainerConfig(world_size=world_size), kernel_config=KernelConfig(compute_device=device.type)
    )
    return EmbeddingShardingPlanner(
        topology=topology, constraints=constraints, storage_reservation=storage_reservation(model)
    )


def storage_reservation(model: nn.Module) -> HeuristicalStorageReservation:
    """The memory kept off the tables on each rank: 15% margin plus our estimate of the dense tensors
    (TorchRec's own heuristic, 6x the dense parameter bytes: parameters, optimizer state, DDP
    buffers), counted without the tables."""
    tables = {id(p) for p in embedding_tables(model).values()}
    dense_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in tables)
    with warnings.catch_warnings():
        # HeuristicalStorageReservation warns on construction, whatever it is given; the warning's
        # advice (pass a dense_tensor_estimate) is what we do here
        warnings.filterwarnings("ignore", message="HeuristicalStorageReservation is known", category=FutureWarning)
        return HeuristicalStorageReservation(percentage=0.15, dense_tensor_estimate=6 * dense_bytes)


def embedding_tables(model: nn.Module) -> Dict[str, nn.Parameter]:
    """``{table name: weight}`` of every EmbeddingCollection in ``model``."""
    return {
        table.name: ec.embeddings[table.name].weight
        for ec in _embedding_collections(model)
        for table in ec.embedding_configs()
    }


def sparse_optimizer_kwargs(lr: float, weight_decay: float, weight_decay_mode: str) -> Dict[str, object]:
    """The fused optimizer's arguments. fbgemm ignores ``weight_decay`` unless a mode is set too
    (its default mode is NONE), so a decay is always passed with its mode."""
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(
            f"sparse_weight_decay_mode: expected one of {sorted(WEIGHT_DECAY_MODES)}, got {weight_decay_mode!r}"
        )
    if weight_decay < 0:
        raise ValueError(f"sparse_weight_decay: expected a number >= 0, got {weight_decay!r}")
    if weight_decay == 0:
        return {"lr": lr}
    from fbgemm_gpu.tbe.config.optimizer_config import WeightDecayMode

    mode = getattr(WeightDecayMode, WEIGHT_DECAY_MODES[weight_decay_mode])
    return {"lr": lr, "weight_decay": weight_decay, "weight_decay_mode": mode}


def table_sharding_types(dmp: DistributedModelParallel) -> Dict[str, str]:
    """The sharding type the plan chose for each table."""
    out = {}
    for module_plan in dmp.plan.plan.values():
        for table, spec in module_plan.items():  # type: ignore[union-attr]
            out[table] = spec.sharding_type
    return out


def dense_parameters(dmp: DistributedModelParallel) -> List[Tuple[str, nn.Parameter]]:
    """The parameters not updated by the fused (in-backward) sparse optimizer."""
    return list(in_backward_optimizer_filter(dmp.named_parameters()))


def dense_optimizer(dmp: DistributedModelParallel, lr: float, weight_decay: float = 0.0) -> KeyedOptimizerWrapper:
    """AdamW over the dense (data-parallel) parameters, as a KeyedOptimizer."""
    params = dict(dense_parameters(dmp))
    return KeyedOptimizerWrapper(params, lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=weight_decay))


def combined_optimizer(dmp: DistributedModelParallel, dense: KeyedOptimizer) -> CombinedOptimizer:
    """One optimizer for checkpointing and scheduling: the fused sparse one plus ``dense``."""
    return CombinedOptimizer([("sparse", dmp.fused_optimizer), ("dense", dense)])


def load_unsharded_state(dmp: DistributedModelParallel, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copies a full (unsharded) state dict into the sharded model: each rank takes its shards."""
    own = dmp.state_dict()
    with torch.no_grad():
        for key, target in own.items():
            plain = _strip_wrappers(key)
            if plain not in state_dict:
                raise KeyError(f"load_unsharded_state: the state dict lacks {plain!r}")
            source = state_dict[plain]
            if hasattr(target, "local_shards"):  # ShardedTensor
                for shard in target.local_shards():
                    offsets, sizes = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                    index = tuple(slice(o, o + s) for o, s in zip(offsets, sizes))
                    shard.tensor.copy_(source[index])
            elif hasattr(target, "to_local"):  # DTensor
                raise NotImplementedError("DTensor shards are not handled; use ShardedTensor state dicts")
            else:
                target.copy_(source)


def _strip_wrappers(key: str) -> str:
    for prefix in ("_dmp_wrapped_module.", "module."):
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def table_pooling_factors(
    model: nn.Module,
    mean_history_len: float,
    tables: Optional[Iterable[str]] = None,
    per_user: Iterable[str] = (USER_FEATURE,),
) -> Dict[str, List[float]]:
    """Per table (of ``tables``, default all), the ids looked up per sample of each of its features:
    a history feature looks up the mean history length, a candidate or per-user feature one."""
    wanted = None if tables is None else set(tables)
    single = set(per_user)
    return {
        table.name: [1.0 if is_candidate_feature(f) or f in single else mean_history_len for f in table.feature_names]
        for ec in _embedding_collections(model)
        for table in ec.embedding_configs()
        if wanted is None or table.name in wanted
    }
