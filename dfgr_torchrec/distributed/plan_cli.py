"""``dfgr plan``: the sharding plan of a training config on a cluster that is not here.

No data set is read: the table sizes come from the flags, the tasks from ``--tasks`` or the data
config's action names, the lookups per sample from ``--mean-seq-len`` (default: the config's
``data.max_seq_len / 2``). The model is built on the ``meta`` device, so planning 10^9 rows over
64 GPUs takes seconds on a laptop.

Example::

    dfgr plan --config configs/train/dfgr_movielens.yaml --world-size 64 --local-world-size 8 \\
        --hbm-gb 80 --item-rows 1e9 --json plan.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Dict, List, Optional, Tuple

from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.features import ACTION_FEATURE, USER_FEATURE, DataSchema
from dfgr_torchrec.recipes.config import TrainConfig, load_train_config

DEFAULT_ACTION_ROWS_WITH_COLUMN = 256  # an action_feature column's distinct values are only known from the data
MAX_ROWS = 2**53  # row ids are int64; above 2^53 a float flag such as 1e20 no longer names a whole number


def _count(text: str) -> int:
    """``1e9`` -> 1000000000: row counts may be written in scientific notation."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of rows, got {text!r}") from None
    if not 1 <= value <= MAX_ROWS or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a whole number of rows in [1, 2^53], got {text!r}")
    return int(value)


def _positive(text: str) -> float:
    """A finite positive number (GiB, a mean length): ``nan`` and ``inf`` are refused here, by flag."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return value


def _named_count(text: str) -> Tuple[str, int]:
    name, sep, rows = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected name=rows, got {text!r}")
    return name, _count(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``dfgr plan`` (the cluster, the table sizes, the traffic)."""
    parser.add_argument("--config", required=True, help="a training YAML (its model, data.max_seq_len, sharding:)")
    parser.add_argument("--world-size", type=int, required=True, help="ranks (GPUs) in all")
    parser.add_argument("--local-world-size", type=int, default=8, help="ranks (GPUs) per node (default 8)")
    parser.add_argument("--hbm-gb", type=_positive, required=True, help="GPU memory per rank, GiB")
    parser.add_argument(
        "--ddr-gb",
        type=_positive,
        default=None,
        help="host memory per node, GiB: lets the planner keep tables there (UVM); default: HBM only",
    )
    parser.add_argument(
        "--batch-size-per-rank", type=int, default=None, help="users per rank per step (default: data.batch_size)"
    )
    parser.add_argument("--item-rows", type=_count, required=True, help="rows of the item table, e.g. 1e9")
    parser.add_argument(
        "--user-rows", type=_count, default=None, help="rows of the user table (with data.user_id=true)"
    )
    parser.add_argument(
        "--action-rows",
        type=_count,
        default=None,
        help="rows of the action table (default: 2^tasks, or 256 when the data config has action_feature)",
    )
    parser.add_argument(
        "--side-rows",
        type=_named_count,
        action="append",
        default=[],
        metavar="NAME=ROWS",
        help="rows of an item side feature's table (repeat per feature)",
    )
    parser.add_argument("--tasks", default=None, help="comma-separated task names (default: the data config's actions)")
    parser.add_argument(
        "--mean-seq-len",
        type=_positive,
        default=None,
        help="mean history length, the pooling factor of history features (default: data.max_seq_len / 2)",
    )
    parser.add_argument("--json", default=None, help="also write the plan here")
    parser.add_argument(
        "overrides", nargs="*", help="config overrides key=value, e.g. model.embeddings.embedding_dim=128"
    )


def plan_schema(config: TrainConfig, args: argparse.Namespace) -> Tuple[DataSchema, List[str]]:
    """The data schema the flags describe, and notes on what was assumed (printed with the plan)."""
    notes: List[str] = []
    data = load_data_config(config.data.config) if os.path.exists(config.data.config) else None
    if args.tasks:
        tasks = [t for t in args.tasks.split(",") if t]
    elif data is not None:
        tasks = data.task_names
    else:
        raise FileNotFoundError(f"{config.data.config}: no such data config (data.config); give --tasks a,b")
    action_rows = args.action_rows
    if action_rows is None:
        with_column = data is not None and data.action_feature is not None
        action_rows = DEFAULT_ACTION_ROWS_WITH_COLUMN if with_column else 1 << len(tasks)
        notes.append(f"action table: {action_rows} rows (assumed; give --action-rows)")
    side_rows = dict(args.side_rows)
    known = set(data.source.side_features) if data else set(side_rows)
    if set(side_rows) - known:
        raise ValueError(
            f"--side-rows {sorted(set(side_rows) - known)}: {config.data.config} has side features {sorted(known)}"
        )
    missing = sorted(known - set(side_rows))
    if missing:
        raise ValueError(
            f"{config.data.config} has side feature(s) {missing}: give --side-rows {missing[0]}=ROWS for each"
        )
    user_rows: Dict[str, int] = {}
    if config.data.user_id:
        if args.user_rows is None:
            raise ValueError("data.user_id is true: give --user-rows ROWS (users + 1)")
        user_rows[USER_FEATURE] = args.user_rows
    schema = DataSchema(tasks, args.item_rows, {ACTION_FEATURE: action_rows}, side_rows, user_rows)
    return schema, notes


def _mean_seq_len(config: TrainConfig, given: Optional[float], notes: List[str]) -> float:
    if given is not None:
        if not 0 < given <= config.data.max_seq_len:
            raise ValueError(
                f"--mean-seq-len: expected a length in (0, data.max_seq_len={config.data.max_seq_len}], got {given:g}"
            )
        return given
    notes.append(
        f"mean sequence length {config.data.max_seq_len / 2:g}: data.max_seq_len / 2 (assumed; give --mean-seq-len)"
    )
    return config.data.max_seq_len / 2


def run(args: argparse.Namespace) -> None:
    """Builds the model on ``meta``, plans it, prints the plan (and writes ``--json``)."""
    import torch

    from dfgr_torchrec.distributed.plan import ClusterSpec, plan_cluster
    from dfgr_torchrec.distributed.plan_report import format_plan, plan_to_json
    from dfgr_torchrec.models import build_model

    start = time.time()
    config = load_train_config(args.config, args.overrides)
    schema, notes = plan_schema(config, args)
    mean_seq_len = _mean_seq_len(config, args.mean_seq_len, notes)
    spec = ClusterSpec(
        args.world_size,
        args.local_world_size,
        args.hbm_gb,
        args.ddr_gb,
        args.batch_size_per_rank or config.data.batch_size,
    )
    model = build_model(config.model, schema, device=torch.device("meta"))
    plan = plan_cluster(model, spec, config.sharding, mean_seq_len, config.optim.sparse_optimizer)
    print(format_plan(plan))
    for note in notes:
        print(f"note: {note}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(plan_to_json(plan), f, indent=2)
        print(f"wrote {args.json}")
    print(f"planned in {time.time() - start:.1f} s")
