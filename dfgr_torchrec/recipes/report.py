"""Print a metrics JSON written by the training recipe as a table: ``python -m dfgr_torchrec.recipes.report PATH``."""

from __future__ import annotations

import json
import sys

from dfgr_torchrec.training.report import metrics_tables


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m dfgr_torchrec.recipes.report runs/<name>/metrics_final.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        metrics = json.load(f)
    print(f"\n{argv[0]}: {metrics['split']} split, {metrics['candidates']} candidates")
    print(metrics_tables(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
