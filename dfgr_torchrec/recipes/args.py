"""The command line of ``dfgr train`` / ``dfgr eval`` and of the torchrun entry point.

Torch-free on purpose: ``dfgr --help`` and a config error answer at once; the recipe (torch,
TorchRec) is imported only once the config is valid. ``key=value`` overrides may come anywhere
on the line (``--config X --resume a=b``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

from dfgr_torchrec.errors import PREEMPTED_EXIT, Preempted, RunError

RUN_CONFIG = "config.yaml"  # the resolved config a run writes into its directory


def add_config_or_run(parser: argparse.ArgumentParser, what: str) -> None:
    """``--config YAML`` or ``--run DIR`` (a run directory: its recorded ``config.yaml``), exactly one."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", help="the run's training YAML, e.g. configs/train/dfgr_movielens.yaml")
    group.add_argument(
        "--run",
        dest="run_dir",
        default=None,
        metavar="DIR",
        help=f"a run directory, e.g. runs/demo-movielens: {what} with the config the run recorded "
        "(key=value overrides still apply, checked against its checkpoint)",
    )


def config_of(args: argparse.Namespace) -> Tuple[str, List[str]]:
    """``(config path, overrides)`` of ``--config`` / ``--run``: a run directory's recorded config,
    placed where the directory is now (it may have moved), then the command's own overrides."""
    run = getattr(args, "run_dir", None)
    if not run:
        return args.config, list(args.overrides)
    path = os.path.join(run, RUN_CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--run {run}: not a run directory (no {RUN_CONFIG}); a run writes it when it starts")
    where = os.path.abspath(run)
    return path, [f"output_dir={os.path.dirname(where)}", f"name={os.path.basename(where)}", *args.overrides]


TRAIN_EXAMPLES = """examples:
  dfgr train --config configs/train/dfgr_movielens.yaml
  dfgr train --config configs/train/dfgr_movielens.yaml train.epochs=3 optim.lr=0.002
  dfgr train --config configs/train/dfgr_movielens.yaml --resume      # after a crash or a preemption"""
EVAL_EXAMPLES = """examples:
  dfgr eval --run runs/demo-movielens                                  # its best checkpoint, on test
  dfgr eval --run runs/demo-movielens --split valid --checkpoint runs/demo-movielens/checkpoints/step-200
  dfgr eval --config configs/train/dfgr_movielens.yaml data.eval_batch_size=512"""


def with_examples(parser: argparse.ArgumentParser, examples: str) -> None:
    """``examples`` as the parser's epilog, printed as written (after the flags of ``--help``)."""
    parser.epilog = examples
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training YAML, e.g. configs/train/dfgr_movielens.yaml")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from its newest intact checkpoint (an error if it has none)",
    )


def _add_eval_flags(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    parser.add_argument("--split", choices=["valid", "test"], default="test", help=f"{prefix}the split to score")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help=f"{prefix}a checkpoint folder to score (default: the run's best, else its latest)",
    )


def _add_overrides(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("overrides", nargs="*", help=f"key=value overrides of the config, e.g. {example}")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """``dfgr train``'s flags (no evaluation-only flag) and examples."""
    _add_train_flags(parser)
    _add_overrides(parser, "optim.lr=0.002 train.epochs=3")
    with_examples(parser, TRAIN_EXAMPLES)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """``dfgr eval``'s flags (no training flag) and examples."""
    add_config_or_run(parser, "evaluate it")
    _add_eval_flags(parser)
    _add_overrides(parser, "data.eval_batch_size=512 (checked against the run's checkpoint)")
    with_examples(parser, EVAL_EXAMPLES)


def run_train(args: argparse.Namespace) -> Dict[str, Any]:
    return run_cli(args, eval_only=False)


def run_eval(args: argparse.Namespace) -> Dict[str, Any]:
    return run_cli(args, eval_only=True)


def add_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: List[str]) -> argparse.Namespace:
    """``parse_known_args``'s leftovers: ``key=value`` overrides after a flag; anything else is an error."""
    unknown = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def resume_mode(args: argparse.Namespace, config_resume: Any, eval_only: bool) -> str:
    """``eval``, ``resume`` (``--resume`` or ``checkpoint.resume: true``), ``auto`` or ``fresh``."""
    if eval_only:
        return "eval"
    if config_resume == "auto":
        return "auto"
    return "resume" if getattr(args, "resume", False) or config_resume is True else "fresh"


def report_left_out(config: Any) -> None:
    """One line on stderr naming the model keys a re-targeted config left out (none: nothing)."""
    if config.left_out:
        print(f"left out {', '.join(config.left_out)}: not read by model type {config.model.type!r}", file=sys.stderr)


def run_cli(args: argparse.Namespace, eval_only: bool = False) -> Dict[str, Any]:
    from dfgr_torchrec.recipes.config import config_dict, load_train_config
    from dfgr_torchrec.training.run_dir import open_run

    # the config, then the run directory, are checked before torch is imported
    config = load_train_config(*config_of(args), recorded=bool(getattr(args, "run_dir", None)))
    report_left_out(config)
    mode = resume_mode(args, config.checkpoint.resume, eval_only)
    checkpoint = getattr(args, "checkpoint", None)  # dfgr eval's flags; dfgr train has none
    opened = open_run(config.run_dir, mode, config_dict(config), config.train.overwrite, checkpoint)
    from dfgr_torchrec.recipes.train import TrainRecipe

    recipe = TrainRecipe(config)
    try:
        recipe.setup(opened=opened)
        return recipe.evaluate_checkpoint(getattr(args, "split", "test")) if eval_only else recipe.train()
    finally:
        recipe.cleanup()


EXPECTED_ERRORS = (ValueError, FileNotFoundError, KeyError, RunError)


def report(prog: str, error: BaseException) -> int:
    """One line on stderr (no traceback) for an error a user can act on; the exit status."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = f"rank {os.environ.get('RANK', '0')}: " if world > 1 and not str(error).startswith("rank ") else ""
    print(f"{prog}: error: {rank}{error}", file=sys.stderr, flush=True)
    return 2 if isinstance(error, (ValueError, FileNotFoundError, KeyError)) else 1


def main(argv: Optional[List[str]] = None, doc: str = "") -> int:
    """``python -m dfgr_torchrec.recipes.train`` (what torchrun and TorchX launch)."""
    prog = "python -m dfgr_torchrec.recipes.train"
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    _add_train_flags(parser)
    parser.add_argument("--eval-only", action="store_true", help="evaluate the run's checkpoint and exit")
    _add_eval_flags(parser, prefix="with --eval-only: ")
    _add_overrides(parser, "optim.lr=0.002 train.epochs=3")
    args = add_overrides(parser, *parser.parse_known_args(argv))
    try:
        run_cli(args, eval_only=args.eval_only)
    except EXPECTED_ERRORS as e:
        return report(prog, e)
    except Preempted:  # its checkpoint saved and the line logged (rank 0): the scheduler requeues on this status
        return PREEMPTED_EXIT
    return 0
