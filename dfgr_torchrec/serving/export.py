"""``dfgr export``: a trained run -> a self-contained serving artifact.

Layout of the artifact directory (written to a temporary folder and renamed, so a crash never
leaves a half-written artifact):

- ``artifact.json``: format version, the complete model config, table precision, whether
  requests need timestamps, where it came from, and the size and blake2b digest of every file;
- ``weights.pt``: the unsharded model's ``state_dict`` (tables included, fp32);
- ``rates.pt`` (``model.rate_terms`` / ``model.rate_offset`` only): the training split's counts,
  the offset's fit and each action's labels (:mod:`dfgr_torchrec.serving.rate_stats`);
- ``vocab/``: raw id -> row for items, users, item side features (and actions when the data
  set has an action column), with the data set's OOV policy;
- ``scoring.pt2``: the candidate graph (:mod:`dfgr_torchrec.serving.graph`) exported with
  ``torch.export``, dynamic in candidates and cached tokens; ``scoring_aoti.pt2``: the same
  program compiled with AOTInductor (unless ``--no-compile`` or no compiler: then the reason is
  recorded in ``artifact.json`` and the exported program is served).

:class:`~dfgr_torchrec.serving.ranker.Ranker` loads it with neither the training code nor the data set.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Dict, Iterable, Optional, Sequence

import torch
from torch import nn

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.config import ModelConfig, to_plain
from dfgr_torchrec.data.atomic import atomic_directory, file_digest
from dfgr_torchrec.modules.stu import hstu_cache_blocker
from dfgr_torchrec.recipes.args import add_config_or_run, config_of, with_examples
from dfgr_torchrec.serving.compile import compile_package, export_candidate_graph, quiet_tracing_logs
from dfgr_torchrec.serving.precision import PRECISIONS, precision_error
from dfgr_torchrec.serving.rate_stats import RATES_FILE, has_rates, rate_state
from dfgr_torchrec.serving.requests import needs_timestamps
from dfgr_torchrec.serving.trust import (  # noqa: F401 (re-exported: the artifact's layout)
    ARTIFACT_FILE,
    FORMAT_VERSION,
    PACKAGE_FILE,
    PROGRAM_FILE,
    RUN_ARTIFACT,
    VOCAB_DIR,
    WEIGHTS_FILE,
    check_program,
)
from dfgr_torchrec.serving.vocab import Vocabularies

SERVABLE_TYPES = ("dfgr", "metagr", "hstu")
TABLE_PRECISIONS = ("fp32", "int8")
EXAMPLES = """examples:
  dfgr export --run runs/demo-movielens                      # to runs/demo-movielens/artifact (dfgr score --run)
  dfgr export --run runs/demo-movielens --out artifacts/dfgr-movielens
  dfgr export --run runs/demo-movielens --out artifacts/dfgr-movielens-int8 --tables int8 --no-compile
  dfgr export --config configs/train/dfgr_movielens.yaml --checkpoint runs/demo-movielens/checkpoints/step-200 --out artifacts/step-200"""


def check_servable(config: ModelConfig) -> None:
    """Raises a one-line ``ValueError`` naming what of ``config`` export cannot serve."""
    if config.type not in SERVABLE_TYPES:
        raise ValueError(f"model.type: export serves {list(SERVABLE_TYPES)}, got {config.type!r}")
    blocker = hstu_cache_blocker(config.interaction) if config.type == "hstu" else None
    if blocker is not None:
        raise ValueError(blocker)


def write_artifact(
    model: nn.Module,
    vocabs: Vocabularies,
    out: str,
    compile: bool = True,
    tables: str = "fp32",
    source: Optional[Dict[str, Any]] = None,
    precision: str = "fp32",
    check_batches: Iterable[SequenceBatch] = (),
    data=None,
) -> str:
    """Writes the artifact of an unsharded ``model`` (eval mode) to ``out``; returns ``out``.

    ``tables="int8"`` makes the :class:`Ranker` serve TorchRec's quantized (int8 row) tables;
    ``precision="bf16"`` exports the candidate graph in bf16, its error against fp32 measured on
    the users of ``check_batches`` and recorded in ``artifact.json`` (``precision_error``). A model
    with ``model.rate_terms`` or ``model.rate_offset`` needs ``data``, its ``PreparedData``: the
    training counts and the labels of each action go into ``rates.pt``
    (:mod:`dfgr_torchrec.serving.rate_stats`).
    """
    config = model.config
    check_servable(config)
    if tables not in TABLE_PRECISIONS:
        raise ValueError(f"tables: expected one of {list(TABLE_PRECISIONS)}, got {tables!r}")
    if has_rates(model) and data is None:
        raise ValueError("data: a model with rate features exports with its prepared data set (write_artifact(data=))")
    rates = rate_state(model, data, vocabs.action is not None) if has_rates(model) else None
    with atomic_directory(out) as tmp:
        torch.save(model.state_dict(), os.path.join(tmp, WEIGHTS_FILE))
        if rates is not None:
            torch.save(rates, os.path.join(tmp, RATES_FILE))
        os.mkdir(os.path.join(tmp, VOCAB_DIR))
        vocabs.save(os.path.join(tmp, VOCAB_DIR))
        program = export_candidate_graph(model, precision)
        error = precision_error(model, program.module(), check_batches) if precision != "fp32" else None
        torch.export.save(program, os.path.join(tmp, PROGRAM_FILE))
        check_program(os.path.join(tmp, PROGRAM_FILE))  # never write a program that loading would refuse
        compiled = _compile(program, os.path.join(tmp, PACKAGE_FILE)) if compile else "skipped (--no-compile)"
        manifest = {
            "format": FORMAT_VERSION,
            "model": to_plain(config),
            "tables": tables,
            "precision": precision,
            **({"precision_error": error} if error is not None else {}),
            "needs_timestamps": needs_timestamps(config),
            "compiled": compiled,
            "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": source or {},
            "files": _file_records(tmp),
        }
        with open(os.path.join(tmp, ARTIFACT_FILE), "w") as f:
            json.dump(manifest, f, indent=2)
    return out


def _compile(program, path: str) -> str:
    """``"ok"``, or why AOTInductor could not compile here (the exported program is served instead)."""
    try:
        compile_package(program, path)
        return "ok"
    except Exception as e:  # a missing compiler or an unsupported op must not lose the export
        if os.path.exists(path):
            os.remove(path)
        return f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _file_records(root: str) -> Dict[str, Dict[str, Any]]:
    records = {}
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            path = os.path.join(folder, name)
            records[os.path.relpath(path, root)] = {"bytes": os.path.getsize(path), "blake2b": file_digest(path)}
    return records


def export_run(
    config_path: str,
    out: str,
    overrides: Sequence[str] = (),
    checkpoint: Optional[str] = None,
    compile: bool = True,
    tables: str = "fp32",
    precision: str = "fp32",
    recorded: bool = False,
) -> str:
    """The artifact of a trained run: its config (``config_path`` + ``overrides``, as trained;
    ``recorded``: a run directory's ``config.yaml``), its best
    checkpoint (else its latest, or ``checkpoint``) and its prepared data set's vocabularies; a bf16
    graph's error is measured on the validation split's first users."""
    from dfgr_torchrec.data.dataset import SequenceDataset
    from dfgr_torchrec.recipes.config import load_train_config
    from dfgr_torchrec.serving.loading import load_model_for_inference, prepared_data_of, resolve_model_config
    from dfgr_torchrec.training.run_dir import RunDirectory
    from dfgr_torchrec.training.run_lock import lock_run

    train_config = load_train_config(config_path, overrides, recorded=recorded)
    check_servable(train_config.model)
    if os.path.isdir(train_config.run_dir) and os.access(train_config.run_dir, os.W_OK):
        lock_run(train_config.run_dir, "export")  # not while a run writes it (a read-only copy: nothing can)
    found = RunDirectory(train_config.run_dir).evaluation_checkpoint(checkpoint)
    data = prepared_data_of(train_config)
    model = load_model_for_inference(resolve_model_config(train_config, data), found, data=data)
    source = {
        "config": config_path,
        "overrides": list(overrides),
        "checkpoint": os.path.abspath(found),
        "data": data.path,
    }
    checks = SequenceDataset(data, "valid", 64, train_config.data.max_seq_len, user_id=train_config.data.user_id)
    vocabs = Vocabularies.from_prepared(data.path)
    checks = checks if precision != "fp32" else ()
    return write_artifact(model, vocabs, out, compile, tables, source, precision, checks, data=data)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_or_run(parser, "export it")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint folder (default: the run's best, else latest)")
    parser.add_argument(
        "--out",
        default=None,
        help="the artifact directory to write (with --run DIR: DIR/artifact, where `dfgr score --run` looks)",
    )
    parser.add_argument("--tables", default="fp32", choices=TABLE_PRECISIONS, help="served table rows")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=list(PRECISIONS),
        help="the candidate graph's dense compute (bf16: its error against fp32 goes into artifact.json)",
    )
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip AOTInductor")
    parser.add_argument("overrides", nargs="*", default=[], help="key=value overrides of the config, as in training")
    with_examples(parser, EXAMPLES)


def run(args: argparse.Namespace) -> None:
    start = time.time()
    quiet_tracing_logs()
    config, overrides = config_of(args)
    out = args.out or (os.path.join(args.run_dir, RUN_ARTIFACT) if args.run_dir else None)
    if out is None:
        raise ValueError("--out: required with --config (with --run DIR the artifact goes to DIR/artifact)")
    out = export_run(
        config, out, overrides, args.checkpoint, args.compile, args.tables, args.precision, bool(args.run_dir)
    )
    with open(os.path.join(out, ARTIFACT_FILE)) as f:
        manifest = json.load(f)
    size = sum(r["bytes"] for r in manifest["files"].values())
    print(
        f"exported {manifest['model']['type']} to {out} ({size / 2**20:.1f} MiB, AOTInductor: "
        f"{manifest['compiled']}) in {time.time() - start:.0f} s"
    )
    error = manifest.get("precision_error")
    if error and error.get("users"):
        print(
            f"{manifest['precision']} graph against fp32 on {error['users']} validation users: probabilities differ by "
            f"{error['mean_abs_probability']:.2e} on average, {error['max_abs_probability']:.2e} at most"
        )
