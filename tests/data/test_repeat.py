"""The repeat heuristic: 1 when the candidate's item occurs in the history the models see."""

from dfgr_torchrec.batch import make_sequence_batch
from dfgr_torchrec.data import synth_log as synth
from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.prepare import prepare
from dfgr_torchrec.data.repeat import candidate_repeats, repeat_heuristic
from dfgr_torchrec.features import ACTION_FEATURE, ITEM_FEATURE


def test_candidate_repeats_match_items_of_the_own_history_only():
    batch = make_sequence_batch(
        history={ITEM_FEATURE: [[3, 4], [], [5]], ACTION_FEATURE: [[0, 1], [], [1]]},
        timestamps=[[1, 2], [], [1]],
        labels=[[[0.0], [1.0]], [], [[0.0]]],
        candidates={ITEM_FEATURE: [[4, 5], [3], [5, 5, 3]]},
        candidate_timestamps=[[3, 3], [3], [2, 2, 2]],
        candidate_labels=[[[1.0], [0.0]], [[0.0]], [[1.0], [1.0], [0.0]]],
        num_tasks=1,
    )
    assert candidate_repeats(batch).tolist() == [True, False, False, True, True, False]


def test_the_heuristic_reads_the_planted_repeats(tmp_path):
    config = synth.SynthConfig(
        num_users=300, num_items=3000, min_seq_len=8, max_seq_len=40, repeat_prob=0.3, action_types=["view", "buy"]
    )
    synth.generate(config, str(tmp_path / "log.tsv"), progress=False)
    synth.write_data_config(config, str(tmp_path / "log.tsv"), str(tmp_path / "data.yaml"))
    data_config = load_data_config(str(tmp_path / "data.yaml"))
    data_config.output_dir = str(tmp_path / "prepared")
    result = repeat_heuristic(prepare(data_config, progress=False), "test", max_seq_len=64)
    assert result["candidates"] == 300 and 0.2 < result["repeat_rate"] < 0.9
    assert result["auc"]["buy"] > 0.65 > result["auc"]["view"], result
    windowed = repeat_heuristic(prepare(data_config, progress=False), "test", max_seq_len=1)
    assert windowed["repeat_rate"] < result["repeat_rate"]
