"""docs/results/ is what ``dfgr report-docs`` writes from the committed results/, byte for byte."""

from __future__ import annotations

import filecmp
from pathlib import Path

from dfgr_torchrec.study.docs import STUDIES, write_docs

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "results"


def test_the_committed_results_pages_are_what_the_generator_writes(tmp_path):
    written = write_docs(str(ROOT / "results"), str(tmp_path))
    names = sorted(Path(p).name for p in written)
    assert names == sorted(p.name for p in COMMITTED.iterdir()), "docs/results/ holds other files: run dfgr report-docs"
    differ = [n for n in names if not filecmp.cmp(tmp_path / n, COMMITTED / n, shallow=False)]
    assert not differ, f"stale results pages {differ}: run `dfgr report-docs --out docs/results`"


def test_the_pages_carry_the_committed_numbers(tmp_path):
    """Not vacuous: the full study's DFGR row on MovieLens-1M is the one the README quotes."""
    write_docs(str(ROOT / "results"), str(tmp_path))
    page = (tmp_path / "full_v2.md").read_text()
    movielens = page.split("## movielens", 1)[1]
    assert "| `dfgr` | 3 | 0.7981 ± 0.0001 | 0.6966 ± 0.0005 |" in movielens
    assert {s.folder for s in STUDIES} >= {"full_v2", "quick", "scaling_movielens_v2", "ablation_pointwise_v2"}
    bench = (tmp_path / "benchmarks.md").read_text()
    assert "| 1024 | 64 | 21.8 | 10.1 | 2.9 | 4.3 | 1.4 | 7.3x | 3.4x |" in bench  # the serving benchmark's target row
    assert "cached_vs_metagr_full 7.29 (target 20, missed)" in bench
    assert "| 4096 | `tiled` | 1,269 | 501 |" in bench  # the tiled kernel at N = 4096, 2 threads


def test_a_changed_result_changes_its_page(tmp_path):
    results = tmp_path / "results" / "quick"
    results.mkdir(parents=True)
    source = (ROOT / "results" / "quick" / "results.jsonl").read_text()
    results.joinpath("results.jsonl").write_text(source.replace('"auc": 0.', '"auc": 0.1', 1))
    write_docs(str(tmp_path / "results"), str(tmp_path / "out"))
    assert (tmp_path / "out" / "quick.md").read_text() != (COMMITTED / "quick.md").read_text()
