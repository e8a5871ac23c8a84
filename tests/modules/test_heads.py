"""MultiTaskHead: one shared MLP, or one tower per task."""

import torch

from dfgr_torchrec.modules.heads import MultiTaskHead


def test_per_task_towers_give_each_task_its_own_hidden_layers():
    torch.manual_seed(0)
    head = MultiTaskHead(8, 3, [4], per_task=True)
    states = torch.randn(5, 8)
    logits = head(states)
    assert logits.shape == (5, 3)
    for t, tower in enumerate(head.towers):
        torch.testing.assert_close(logits[:, t : t + 1], tower(states))
    with torch.no_grad():  # a change in one task's tower moves that task's logit only
        head.towers[1][0].weight.add_(1.0)
    moved = head(states)
    torch.testing.assert_close(moved[:, [0, 2]], logits[:, [0, 2]])
    assert not torch.allclose(moved[:, 1], logits[:, 1])


def test_the_shared_head_keeps_its_weight_names():
    assert [n for n, _ in MultiTaskHead(8, 3, [4]).named_parameters()] == [
        "mlp.0.weight",
        "mlp.0.bias",
        "mlp.2.weight",
        "mlp.2.bias",
    ]
