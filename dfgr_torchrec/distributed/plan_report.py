"""A :class:`~dfgr_torchrec.distributed.plan.ClusterPlan` as text (a table per table) and as JSON.

Example::

    print(format_plan(plan))
    json.dump(plan_to_json(plan), open("plan.json", "w"), indent=2)
"""

from __future__ import annotations

from typing import Any, Dict, List

from dfgr_torchrec.distributed.plan import GB, ClusterPlan, TablePlan

MB = 1024**2


def _shard_sizes(table: TablePlan) -> str:
    """``64 x [15625000, 64]``, or the distinct sizes with their counts when they differ."""
    counts: Dict[str, int] = {}
    for _, rows, cols, _, _ in table.shards:
        key = f"[{rows}, {cols}]"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} x {size}" for size, n in counts.items())


def _ranks(ranks: List[int]) -> str:
    if len(ranks) > 2 and ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"{ranks[0]}..{ranks[-1]} ({len(ranks)})"
    return ",".join(map(str, ranks))


def format_plan(plan: ClusterPlan) -> str:
    """The plan as lines a person reads: the cluster, one line per table, memory and traffic."""
    spec = plan.spec
    nodes = spec.world_size // spec.local_world_size
    ddr = "tables in HBM only" if spec.ddr_gb is None else f"{spec.ddr_gb:g} GiB host memory per node"
    lines = [
        f"cluster: {spec.world_size} ranks ({nodes} nodes x {spec.local_world_size}), {spec.hbm_gb:g} GiB HBM per rank, {ddr}",
        f"batch: {spec.batch_size_per_rank} users per rank, mean sequence length {plan.mean_seq_len:g}",
        "",
        f"{'table':<12} {'rows':>14} {'dim':>4}  {'sharding':<14} {'kernel':<18} {'ranks':<14} shards",
    ]
    for t in plan.tables:
        lines.append(
            f"{t.name:<12} {t.rows:>14,} {t.dim:>4}  {t.sharding_type:<14} {t.compute_kernel:<18} {_ranks(t.ranks):<14} {_shard_sizes(t)}"
        )
    hbm, ddr_max = plan.max_hbm_per_rank(), max(plan.ddr_per_rank)
    lines += [
        "",
        f"HBM per rank: max {hbm / GB:.2f} GiB, min {min(plan.hbm_per_rank) / GB:.2f} GiB of {spec.hbm_gb:g} GiB "
        f"(tables + optimizer state + {plan.reserved_hbm_bytes / GB:.2f} GiB reserved for dense tensors and margin)",
        f"host DDR per rank (UVM tables): max {ddr_max / GB:.2f} GiB",
        f"embedding all-to-all per rank per step: forward {plan.forward_a2a_bytes() / MB:.2f} MiB, "
        f"forward + backward {2 * plan.forward_a2a_bytes() / MB:.2f} MiB",
        "  (= batch x pooling factor x dim x 4 B x (W-1)/W per feature; backward sends the same gradients back)",
    ]
    return "\n".join(lines)


def plan_to_json(plan: ClusterPlan) -> Dict[str, Any]:
    """Everything :func:`format_plan` prints, with bytes and every shard."""
    spec = plan.spec
    return {
        "cluster": {
            "world_size": spec.world_size,
            "local_world_size": spec.local_world_size,
            "hbm_gb": spec.hbm_gb,
            "ddr_gb_per_node": spec.ddr_gb,
            "batch_size_per_rank": spec.batch_size_per_rank,
        },
        "mean_seq_len": plan.mean_seq_len,
        "tables": [
            {
                "name": t.name,
                "rows": t.rows,
                "dim": t.dim,
                "sharding_type": t.sharding_type,
                "compute_kernel": t.compute_kernel,
                "ranks": t.ranks,
                "shards": [
                    {"rank": r, "rows": n, "cols": c, "hbm_bytes": h, "ddr_bytes": d} for r, n, c, h, d in t.shards
                ],
                "forward_a2a_bytes_per_rank": t.forward_a2a_bytes,
            }
            for t in plan.tables
        ],
        "reserved_hbm_bytes_per_rank": plan.reserved_hbm_bytes,
        "hbm_bytes_per_rank": plan.hbm_per_rank,
        "ddr_bytes_per_rank": plan.ddr_per_rank,
        "a2a_bytes_per_rank_per_step": {
            "forward": plan.forward_a2a_bytes(),
            "forward_backward": 2 * plan.forward_a2a_bytes(),
        },
    }
