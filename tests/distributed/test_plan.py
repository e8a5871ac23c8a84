"""``dfgr plan``: the planner on the meta device for a cluster that is not here (CPU only, no data)."""

import json
import time

import pytest

from dfgr_torchrec.cli import main
from dfgr_torchrec.distributed.plan import GB, a2a_forward_bytes

CONFIG = "configs/train/dfgr_movielens.yaml"
CLUSTER = ["--world-size", "64", "--local-world-size", "8", "--item-rows", "1e9"]


def test_a2a_formula():
    # 32 users x (100 history + 1 candidate) ids x 64 dims x 4 B x 63/64
    assert a2a_forward_bytes("row_wise", 32, [100.0, 1.0], 64, 64) == pytest.approx(32 * 101 * 64 * 4 * 63 / 64)
    assert a2a_forward_bytes("data_parallel", 32, [100.0], 64, 64) == 0.0


def test_plans_a_billion_rows_over_64_ranks(tmp_path, capsys):
    out = tmp_path / "plan.json"
    start = time.time()
    rc = main(["plan", "--config", CONFIG, *CLUSTER, "--hbm-gb", "80", "--json", str(out)])
    seconds = time.time() - start
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert seconds < 30, f"planning took {seconds:.1f} s"
    plan = json.loads(out.read_text())
    tables = {t["name"]: t for t in plan["tables"]}
    assert set(tables) == {"item", "action"}  # every table of the model is placed
    for table in tables.values():
        assert sum(s["rows"] for s in table["shards"]) == table["rows"] or table["sharding_type"] == "column_wise"
    item = tables["item"]
    assert item["sharding_type"] == "row_wise" and item["ranks"] == list(range(64))
    assert sum(s["rows"] for s in item["shards"]) == 10**9
    assert max(plan["hbm_bytes_per_rank"]) < 80 * GB
    assert plan["a2a_bytes_per_rank_per_step"]["forward"] > 0
    assert "row_wise" in printed and "0..63 (64)" in printed and "all-to-all" in printed


def test_an_impossible_plan_is_one_line_and_exit_2(capsys):
    rc = main(["plan", "--config", CONFIG, *CLUSTER, "--hbm-gb", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("dfgr plan: error: no sharding plan fits"), err
    assert "--ddr-gb" in err and "238.4 GiB" in err


def test_user_id_needs_user_rows(capsys):
    rc = main(["plan", "--config", CONFIG, *CLUSTER, "--hbm-gb", "80", "--tasks", "like", "data.user_id=true"])
    assert rc == 2 and "--user-rows" in capsys.readouterr().err


def test_side_rows_must_name_a_side_feature_of_the_data(capsys):
    rc = main(["plan", "--config", CONFIG, *CLUSTER, "--hbm-gb", "80", "--side-rows", "genre=20"])
    assert rc == 2 and "--side-rows ['genre']" in capsys.readouterr().err


def test_per_user_features_look_up_one_id():
    import torch

    from dfgr_torchrec.config import RankingModelConfig
    from dfgr_torchrec.distributed.sharding import table_pooling_factors
    from dfgr_torchrec.features import DataSchema
    from dfgr_torchrec.models import build_model

    schema = DataSchema(["like"], 100, user_rows={"user_id": 10})
    model = build_model(RankingModelConfig(), schema, device=torch.device("meta"))
    pooling = table_pooling_factors(model, 50.0)
    assert pooling["item"] == [50.0, 1.0] and pooling["user_id"] == [1.0] and pooling["action"] == [50.0]
