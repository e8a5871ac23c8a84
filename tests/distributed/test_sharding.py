"""The ranking models under DistributedModelParallel on 2 gloo processes (CPU).

Each rank builds the unsharded reference and the same model on the meta device, shards the
item table row_wise and the action table table_wise, loads the reference weights, and checks
that (a) the sharded forward and candidate scores equal the reference on its own batch, and
(b) training with a fused RowWiseAdagrad (tables) + AdamW (dense) lowers the loss, and (c) the
dense replicas start equal (even from different RNG streams) and stay equal: DDP averages their
gradients.
"""

import os
import socket
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dfgr_torchrec.config import InteractionConfig, RankingModelConfig, SequenceEmbeddingConfig, TaskConfig
from dfgr_torchrec.data.synthetic_batches import SyntheticSequences
from dfgr_torchrec.distributed.sharding import (
    combined_optimizer,
    dense_optimizer,
    load_unsharded_state,
    shard_model,
    sharding_constraints,
    table_sharding_types,
)
from dfgr_torchrec.features import ACTION_FEATURE
from dfgr_torchrec.models.ranking import DFGRRankingModel, MetaGRRankingModel

WORLD = 2
MODELS = {"dfgr": DFGRRankingModel, "metagr": MetaGRRankingModel}
# name -> (class, model.bias_terms): the bias terms are a second collection of the same table names
VARIANTS = {**{name: (cls, False) for name, cls in MODELS.items()}, "dfgr+bias_terms": (DFGRRankingModel, True)}


def _config(bias_terms=False):
    return RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(
            item_vocab_size=1000, action_vocab_sizes={ACTION_FEATURE: 4}, embedding_dim=16
        ),
        interaction=InteractionConfig(
            d_model=16, num_layers=2, num_heads=2, attention_dim=8, linear_dim=8, max_seq_len=32
        ),
        tasks=[TaskConfig("a"), TaskConfig("b")],
        bias_terms=bias_terms,
    )


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, model_name, errors):
    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=WORLD)
        torch.set_num_threads(1)
        cls, bias_terms = VARIANTS[model_name]
        torch.manual_seed(rank)  # a different RNG stream per rank: DDP's constructor makes the replicas equal
        sharded = shard_model(
            cls(_config(bias_terms), device=torch.device("meta")),
            {"item": "row_wise", "action": "table_wise"},
            torch.device("cpu"),
            sparse_lr=0.05,
        )
        _assert_replicas_equal(sharded, "after sharding")
        torch.manual_seed(0)
        reference = cls(_config(bias_terms))
        dmp = shard_model(
            cls(_config(bias_terms), device=torch.device("meta")),
            {"item": "row_wise", "action": "table_wise"},
            torch.device("cpu"),
            sparse_lr=0.05,
        )
        assert table_sharding_types(dmp) == {"item": "row_wise", "action": "table_wise"}, table_sharding_types(dmp)
        load_unsharded_state(dmp, reference.state_dict())

        world = SyntheticSequences(num_items=1000, num_tasks=2, seed=3)
        batch = world.batch(4, 1, 20, 3, torch.Generator().manual_seed(100 + rank))  # a different batch per rank
        with torch.no_grad():
            torch.testing.assert_close(dmp(batch).logits, reference(batch).logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(
                dmp.module.score_candidates(batch).values(),
                reference.score_candidates(batch).values(),
                atol=1e-5,
                rtol=1e-5,
            )

        optimizer = combined_optimizer(dmp, dense_optimizer(dmp, lr=1e-2))
        table_before = [s.tensor.clone() for s in dmp.state_dict()[_item_key(dmp)].local_shards()]
        losses = []
        for _ in range(15):
            optimizer.zero_grad()
            out = dmp(batch)
            out.loss.backward()
            optimizer.step()
            losses.append(out.loss.item())
        assert losses[-1] < 0.9 * losses[0], losses
        _assert_replicas_equal(dmp, "after training on different batches")  # the gradients were averaged
        table_after = [s.tensor for s in dmp.state_dict()[_item_key(dmp)].local_shards()]
        assert any(not torch.equal(a, b) for a, b in zip(table_before, table_after)), (
            "the fused optimizer updated no row"
        )
        dist.destroy_process_group()
    except BaseException:
        errors.put(f"rank {rank}:\n{traceback.format_exc()}")
        raise


def _assert_replicas_equal(dmp, when):
    """Every data-parallel (dense) parameter is the same on all ranks."""
    dense = {n: p for n, p in dmp.named_parameters() if type(p) is torch.nn.Parameter and "embeddings." not in n}
    assert dense, "no dense parameters found"
    for name, param in dense.items():
        gathered = [torch.empty_like(param) for _ in range(WORLD)]
        dist.all_gather(gathered, param.detach().contiguous())
        assert all(torch.equal(gathered[0], g) for g in gathered[1:]), f"{name} differs across ranks {when}"


def _item_key(dmp):
    return next(k for k in dmp.state_dict() if k.endswith("embeddings.item.weight"))


@pytest.mark.parametrize("model_name", sorted(VARIANTS))
def test_sharded_model_matches_unsharded_and_trains(model_name):
    errors = mp.get_context("spawn").SimpleQueue()
    ctx = mp.spawn(_worker, args=(_free_port(), model_name, errors), nprocs=WORLD, join=False)
    try:
        while not ctx.join():
            pass
    except Exception as e:
        messages = []
        while not errors.empty():
            messages.append(errors.get())
        pytest.fail("\n".join(messages) or str(e))


def test_bad_sharding_type_names_the_table():
    with pytest.raises(ValueError, match=r"sharding\.item: expected one of"):
        sharding_constraints({"item": "data_parallel_please"})


def test_fused_adam_on_cpu_is_refused_clearly():
    model = DFGRRankingModel(_config(), device=torch.device("meta"))
    with pytest.raises(ValueError, match="'adam' is fused on GPU only"):
        shard_model(model, {"item": "row_wise"}, torch.device("cpu"), sparse_optimizer="adam")


@pytest.mark.parametrize("mode", ["decoupled", "l2"])
def test_fused_weight_decay_shrinks_only_the_rows_looked_up(mode):
    """fbgemm drops `weight_decay` without a mode; shard_model passes both, so a zero-gradient
    step still decays the looked-up rows (and leaves the others alone)."""
    from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        moved = {}
        for wd in (0.0, 0.1):
            torch.manual_seed(0)
            model = torch.nn.Module()
            model.ec = EmbeddingCollection(
                tables=[EmbeddingConfig(name="t", embedding_dim=4, num_embeddings=10, feature_names=["f"])],
                device=torch.device("meta"),
            )
            dmp = shard_model(
                model,
                {"t": "table_wise"},
                torch.device("cpu"),
                sparse_lr=0.1,
                sparse_weight_decay=wd,
                sparse_weight_decay_mode=mode,
            )
            before = dmp.state_dict()["ec.embeddings.t.weight"].local_shards()[0].tensor.clone()
            kjt = KeyedJaggedTensor.from_lengths_sync(
                keys=["f"], values=torch.tensor([1, 2]), lengths=torch.tensor([2])
            )
            (dmp.module.ec(kjt)["f"].values() * 0.0).sum().backward()
            after = dmp.state_dict()["ec.embeddings.t.weight"].local_shards()[0].tensor
            moved[wd] = (after - before).abs().sum(1)
        assert moved[0.0].sum() == 0
        assert (moved[0.1][[1, 2]] > 0).all() and moved[0.1][[0, 3, 4]].sum() == 0
    finally:
        dist.destroy_process_group()
