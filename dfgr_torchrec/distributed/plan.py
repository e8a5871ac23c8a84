"""Plan the sharding of a model's tables for a cluster that is not here (the planner on ``meta``).

TorchRec's planner only needs the tables' shapes, the topology (ranks, HBM and host memory per
rank) and the expected lookups, so a model built on the ``meta`` device (no memory) is planned
on a laptop CPU for 64 GPUs just as on the cluster itself.

All-to-all volume per step (what the plan costs on the network, per rank, mean over ranks): a
table sharded by rows or whole tables (``row_wise``, ``table_wise``, ``column_wise``) sends the
embedding rows each feature looks up back to the rank that asked for them, so per feature::

    forward bytes = batch_size_per_rank x pooling factor x embedding_dim x 4 x (W - 1) / W

(``pooling factor``: ids per sample, the mean sequence length for history features, 1 for the
candidate ones; 4: fp32 rows; ``(W - 1) / W``: the share of lookups served by another rank of
``W``). The backward pass sends the same volume of gradients back, so a step costs twice the
forward. ``data_parallel`` tables send nothing (their gradients are all-reduced with the dense
layers). The ids themselves (8 bytes each, ``8 / (4 x dim)`` of the rows) are left out.

Example::

    model = build_model(config.model, schema, device=torch.device("meta"))
    plan = plan_cluster(model, ClusterSpec(world_size=64, local_world_size=8, hbm_gb=80),
                        {"item": "row_wise"}, mean_seq_len=100.0)
    plan.tables[0].sharding_type, plan.max_hbm_per_rank()
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

from torch import nn
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.planner import EmbeddingShardingPlanner
from torchrec.distributed.planner.types import (
    KernelConfig,
    ParameterConstraints,
    PlannerError,
    ShardingOption,
    Topology,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from dfgr_torchrec.distributed.sharding import (
    SPARSE_OPTIMIZERS,
    embedding_tables,
    sharding_constraints,
    sparse_optimizer_kwargs,
    storage_reservation,
    table_pooling_factors,
)

GB = 1024**3
HBM_KERNELS = [EmbeddingComputeKernel.FUSED.value, EmbeddingComputeKernel.DENSE.value]
DDR_KERNELS = [EmbeddingComputeKernel.FUSED_UVM_CACHING.value, EmbeddingComputeKernel.FUSED_UVM.value]
BYTES_PER_VALUE = 4  # fp32 embedding rows


@dataclass
class ClusterSpec:
    """The cluster to plan for.

    Args:
        world_size: ranks (GPUs) in all.
        local_world_size: ranks per node.
        hbm_gb: GPU memory per rank, GiB.
        ddr_gb: host memory per node, GiB, shared by its ranks; None: the tables stay in HBM.
        batch_size_per_rank: users per rank per step.
    """

    world_size: int
    local_world_size: int
    hbm_gb: float
    ddr_gb: Optional[float] = None
    batch_size_per_rank: int = 32

    def __post_init__(self) -> None:
        for key in ("world_size", "local_world_size", "batch_size_per_rank"):
            if getattr(self, key) < 1:
                raise ValueError(f"--{key.replace('_', '-')}: expected a positive integer, got {getattr(self, key)}")
        if self.world_size % self.local_world_size:
            raise ValueError(
                f"--world-size {self.world_size} is not a multiple of --local-world-size {self.local_world_size}"
            )
        if self.hbm_gb <= 0 or (self.ddr_gb is not None and self.ddr_gb <= 0):
            raise ValueError(f"--hbm-gb and --ddr-gb: expected positive sizes, got {self.hbm_gb} and {self.ddr_gb}")

    @property
    def ddr_gb_per_rank(self) -> Optional[float]:
        return None if self.ddr_gb is None else self.ddr_gb / self.local_world_size


@dataclass
class TablePlan:
    """Where one table goes: ``shards`` are ``(rank, rows, columns, hbm bytes, ddr bytes)``."""

    name: str
    rows: int
    dim: int
    sharding_type: str
    compute_kernel: str
    shards: List[tuple]
    forward_a2a_bytes: float  # per rank per step, mean over ranks

    @property
    def ranks(self) -> List[int]:
        return sorted({s[0] for s in self.shards})


@dataclass
class ClusterPlan:
    """The planner's choice for every table, with the memory per rank and the all-to-all volume."""

    spec: ClusterSpec
    mean_seq_len: float
    tables: List[TablePlan]
    reserved_hbm_bytes: float  # per rank: dense parameters, optimizer state, the planner's margin
    hbm_per_rank: List[float] = field(default_factory=list)  # tables + reserved
    ddr_per_rank: List[float] = field(default_factory=list)

    def max_hbm_per_rank(self) -> float:
        return max(self.hbm_per_rank)

    def forward_a2a_bytes(self) -> float:
        return sum(t.forward_a2a_bytes for t in self.tables)


def cluster_topology(spec: ClusterSpec) -> Topology:
    """The CUDA topology of ``spec``, built the way TorchRec recommends (``TopologyFactory``)."""
    ddr = spec.ddr_gb_per_rank
    trainer = TrainerConfig(
        world_size=spec.world_size,
        local_world_size=spec.local_world_size,
        hbm_cap_bytes=int(spec.hbm_gb * GB),
        ddr_cap_bytes=None if ddr is None else int(ddr * GB),
    )
    return TopologyFactory.create_topology(trainer, kernel_config=KernelConfig(compute_device="cuda"))


def plan_constraints(
    model: nn.Module, table_sharding: Mapping[str, str], pooling: Mapping[str, List[float]], use_ddr: bool
) -> Dict[str, ParameterConstraints]:
    """Every table's constraints: the config's sharding type (if named), its pooling factors, and
    the kernels allowed (HBM only, or also UVM in host memory when ``use_ddr``)."""
    kernels = HBM_KERNELS + (DDR_KERNELS if use_ddr else [])
    named = sharding_constraints(table_sharding, pooling)
    out = {}
    for name in embedding_tables(model):
        base = named.get(name) or ParameterConstraints(pooling_factors=list(pooling[name]))
        out[name] = dataclasses.replace(base, compute_kernels=list(kernels))
    return out


def a2a_forward_bytes(sharding_type: str, batch_size: int, pooling: List[float], dim: int, world_size: int) -> float:
    """Bytes of embedding rows one rank sends per forward step for one table (see the module doc).

    Example::

        a2a_forward_bytes("row_wise", 32, [100.0, 1.0], 64, 64)   # 32 x 101 x 64 x 4 x 63/64
    """
    if sharding_type == "data_parallel":
        return 0.0
    return batch_size * sum(pooling) * dim * BYTES_PER_VALUE * (world_size - 1) / world_size


def plan_cluster(
    model: nn.Module,
    spec: ClusterSpec,
    table_sharding: Mapping[str, str],
    mean_seq_len: float,
    sparse_optimizer: str = "row_wise_adagrad",
) -> ClusterPlan:
    """Plans ``model`` (built on ``meta``) for ``spec``; a plan that cannot fit is a ValueError.

    The tables get the recipe's fused optimizer first, so their optimizer state is counted.
    """
    for ec_params in embedding_tables(model).values():
        apply_optimizer_in_backward(
            SPARSE_OPTIMIZERS[sparse_optimizer], [ec_params], sparse_optimizer_kwargs(0.01, 0.0, "decoupled")
        )
    pooling = table_pooling_factors(model, mean_seq_len)
    topology, reservation, sharders = cluster_topology(spec), storage_reservation(model), [EmbeddingCollectionSharder()]
    constraints = plan_constraints(model, table_sharding, pooling, spec.ddr_gb is not None)
    chosen: List[ShardingOption] = []
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=spec.batch_size_per_rank,
        storage_reservation=reservation,
        constraints=constraints,
        callbacks=[lambda best: chosen.extend(best) or best],
    )
    try:
        planner.plan(model, sharders)
        reserved = reservation.reserve(topology, spec.batch_size_per_rank, model, sharders, constraints)
    except PlannerError as e:
        raise ValueError(_no_plan_message(model, spec, e)) from None
    tables = [_table_plan(option, spec, pooling[option.name]) for option in chosen]
    reserved_bytes = float(topology.devices[0].storage.hbm - reserved.devices[0].storage.hbm)
    return _with_memory(ClusterPlan(spec, mean_seq_len, tables, reserved_bytes))


def _table_plan(option: ShardingOption, spec: ClusterSpec, pooling: List[float]) -> TablePlan:
    rows, dim = option.tensor.shape
    shards = [(s.rank, s.size[0], s.size[1], s.storage.hbm, s.storage.ddr) for s in option.shards]
    volume = a2a_forward_bytes(option.sharding_type, spec.batch_size_per_rank, pooling, dim, spec.world_size)
    return TablePlan(option.name, rows, dim, option.sharding_type, option.compute_kernel, shards, volume)


def _with_memory(plan: ClusterPlan) -> ClusterPlan:
    hbm = [plan.reserved_hbm_bytes] * plan.spec.world_size
    ddr = [0.0] * plan.spec.world_size
    for table in plan.tables:
        for rank, _, _, hbm_bytes, ddr_bytes in table.shards:
            hbm[rank] += hbm_bytes
            ddr[rank] += ddr_bytes
    plan.hbm_per_rank, plan.ddr_per_rank = hbm, ddr
    return plan


def _no_plan_message(model: nn.Module, spec: ClusterSpec, error: PlannerError) -> str:
    table_bytes = sum(p.numel() * p.element_size() for p in embedding_tables(model).values())
    per_rank = table_bytes / spec.world_size / GB
    where = "HBM" if spec.ddr_gb is None else "HBM + host memory"
    first = str(error).strip().splitlines()[0].strip()
    return (
        f"no sharding plan fits: the tables alone take {table_bytes / GB:,.1f} GiB ({per_rank:,.2f} GiB per rank "
        f"before optimizer state), the {where} per rank is {spec.hbm_gb:g} GiB"
        + (f" + {spec.ddr_gb_per_rank:g} GiB" if spec.ddr_gb is not None else "")
        + "; raise --hbm-gb or --world-size, or give --ddr-gb to keep tables in host memory"
        + f" (planner: {first})"
    )
