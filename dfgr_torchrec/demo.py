"""``dfgr demo``: the smallest honest end-to-end run, with no download.

Generates a log with a planted signal (``configs/data/synth-demo.yaml``), then trains and
evaluates each requested model type with the training recipe (the same path as ``dfgr train``,
sharded tables included) and prints their test metrics side by side.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List

from tabulate import tabulate

from dfgr_torchrec.models import MODELS
from dfgr_torchrec.recipes.config import load_train_config
from dfgr_torchrec.recipes.train import TrainRecipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/debug/dfgr_synthetic.yaml", help="training YAML")
    parser.add_argument("--model", choices=sorted(MODELS), nargs="+", default=["dfgr", "metagr"])
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (train.max_steps)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every model, e.g. train.epochs=1")


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    results = []
    recipe = None
    try:
        for name in args.model:
            overrides = [f"model.type={name}", *args.overrides, *_steps(args.steps)]
            config = load_train_config(args.config, overrides)
            config.name = f"{config.name}-{name}"
            config.train.overwrite = True  # a demo is rerun at will: it replaces its previous runs
            recipe = TrainRecipe(config)
            start = time.perf_counter()
            recipe.setup()  # the models share one process group: cleanup comes once, at the end
            metrics = recipe.train()
            results.append({"model": name, "train_seconds": time.perf_counter() - start, "metrics": metrics})
    finally:
        if recipe is not None:
            recipe.cleanup()
    _print_table(results)
    return results


def _steps(steps) -> List[str]:
    return [] if steps is None else [f"train.max_steps={steps}"]


def _print_table(results: List[Dict[str, Any]]) -> None:
    tasks = list(results[0]["metrics"]["tasks"]) if results else []
    rows = [
        [r["model"], f"{r['train_seconds']:.1f}", *(f"{r['metrics']['tasks'][t]['auc']:.4f}" for t in tasks)]
        for r in results
    ]
    print("\nTest candidates (each user's last interaction), scored after the history:")
    print(tabulate(rows, headers=["model", "seconds", *(f"AUC {t}" for t in tasks)]))
