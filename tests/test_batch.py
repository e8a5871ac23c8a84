import pytest
import torch

from dfgr_torchrec.batch import make_sequence_batch


def _batch():
    return make_sequence_batch(
        history={"item_id": [[1, 2], [3]], "action": [[0, 1], [1]]},
        timestamps=[[10, 20], [5]],
        labels=[[[0.0], [1.0]], [[1.0]]],
        candidates={"item_id": [[4], [5, 6]]},
        candidate_timestamps=[[30], [9, 9]],
        candidate_labels=[[[1.0]], [[0.0], [1.0]]],
        num_tasks=1,
    )


def test_batch_layout():
    b = _batch()
    assert b.history_lengths.tolist() == [2, 1]
    assert b.candidate_lengths.tolist() == [1, 2]
    assert b.labels.shape == (3, 1) and b.candidate_labels.shape == (3, 1)
    assert b.features["cand_item_id"].values().tolist() == [4, 5, 6]


def test_batch_moves_like_a_pipeline_batch():
    b = _batch().to(torch.device("cpu"))
    assert b.features["item_id"].values().tolist() == [1, 2, 3]
    assert torch.equal(b.timestamps, torch.tensor([10, 20, 5]))


def test_user_count_mismatch_names_the_feature():
    with pytest.raises(ValueError, match="action"):
        make_sequence_batch(
            history={"item_id": [[1], [2]], "action": [[0]]},
            timestamps=[[1], [2]],
            labels=[[[0.0]], [[0.0]]],
            candidates={"item_id": [[], []]},
            candidate_timestamps=[[], []],
            candidate_labels=[[], []],
            num_tasks=1,
        )
