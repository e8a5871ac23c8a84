"""Summary cells: mean ± std over seeds, a bare number for one seed, n/a when nothing is defined."""

import math

from dfgr_torchrec.study.report import _mean_std


def test_mean_std_cells():
    assert _mean_std([0.7, 0.8]) == "0.7500 ± 0.0707"
    assert _mean_std([0.7, math.nan]) == "0.7000"  # one defined seed: no spread to claim
    assert _mean_std([math.nan]) == "n/a"
