"""A checkpoint of a sharded training run -> the unsharded model on CPU, in one process.

The recipe saves ``{"model": dmp.state_dict(), "optim": ...}`` with ``torch.distributed.checkpoint``
(DCP), so a weight ``w`` of the model is the checkpoint key ``model.w`` (a DMP prefix such as
``_dmp_wrapped_module.`` is dropped too). DCP loads those shards into plain tensors without a
process group. Every parameter and buffer of the model must be in the checkpoint and every
``model.*`` key of the checkpoint must be a weight of the model, else :class:`CheckpointMismatch`.

Example::

    config = resolve_model_config(load_train_config("runs/demo-movielens/config.yaml", recorded=True), data)
    model = load_model_for_inference(config, "runs/demo-movielens/best")
    logits = model.score_candidates(batch)
"""

from __future__ import annotations

import contextlib
import os
from typing import Dict, List

import torch
from torch import nn

from dfgr_torchrec.config import ModelConfig, fill_from_data
from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.dataset import PreparedData
from dfgr_torchrec.data.identity import prepared_for_run
from dfgr_torchrec.data.prepare import find_prepared
from dfgr_torchrec.models import build_model
from dfgr_torchrec.training.checkpoint import latest_checkpoint
from dfgr_torchrec.training.safe_dcp import metadata as checkpoint_metadata
from dfgr_torchrec.training.safe_dcp import safe_load

MODEL_PREFIX = "model."
DMP_PREFIXES = ("_dmp_wrapped_module.", "module.")


class CheckpointMismatch(ValueError):
    """The checkpoint's model weights and the model's do not match one to one."""


def resolve_model_config(train_config, data: PreparedData) -> ModelConfig:
    """The run's ``model:`` sized from its prepared data set (``train_config``: a ``TrainConfig``)."""
    return fill_from_data(train_config.model, data.schema(train_config.data.user_id))


def prepared_data_of(train_config, root: str = ".") -> PreparedData:
    """The prepared data set of a run, its paths read relative to ``root`` (where it was launched);
    found, never prepared (nothing is written); the copy the run was trained on when the newest
    one has other vocabularies (:func:`~dfgr_torchrec.data.identity.prepared_for_run`)."""
    with contextlib.chdir(root):
        found = find_prepared(load_data_config(train_config.data.config))
        if found is None:
            raise FileNotFoundError(
                f"{root}: no prepared copy of {train_config.data.config}; run `dfgr data prepare` there"
            )
        return PreparedData(prepared_for_run(os.path.abspath(train_config.run_dir), os.path.abspath(found)))


def checkpoint_path(path: str) -> str:
    """``path`` itself when it is a DCP checkpoint, else its newest ``step-N`` (``<run>/best``)."""
    if os.path.isfile(os.path.join(path, ".metadata")):
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"{path}: neither a DCP checkpoint (no .metadata) nor a folder of step-N checkpoints")
    return found


# weights that moved to another module, ``{old name prefix: new}``: DFGR's placeholder action and
# concat projection left the lookup (``SequenceEmbedding``) for its token merge (``DualFlowTokens``)
RENAMED = {"embedding.placeholder.": "tokens.placeholder.", "embedding.merge_projection.": "tokens.merge_projection."}


def model_keys(path: str) -> Dict[str, str]:
    """``{model weight name: checkpoint key}`` of every ``model.*`` tensor of a DCP checkpoint."""
    keys: Dict[str, str] = {}
    for key in checkpoint_metadata(path).state_dict_metadata:
        if not key.startswith(MODEL_PREFIX):
            continue
        name = key[len(MODEL_PREFIX) :]
        for prefix in DMP_PREFIXES:
            name = name[len(prefix) :] if name.startswith(prefix) else name
        keys[name] = key
    for old, new in RENAMED.items():  # a checkpoint saved before a weight moved
        for name in [n for n in keys if n.startswith(old)]:
            keys[new + name[len(old) :]] = keys.pop(name)
    return keys


def _check_keys(path: str, expected: List[str], found: Dict[str, str]) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointMismatch(
            f"{path}: the checkpoint does not match the model built from the config: "
            f"missing from the checkpoint {missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)}); "
            f"not in the model {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)})"
        )


def load_weights(model: nn.Module, path: str) -> nn.Module:
    """Loads the ``model.*`` tensors of the DCP checkpoint ``path`` into ``model`` (unsharded) in place."""
    path = checkpoint_path(path)
    own = model.state_dict(keep_vars=False)
    found = model_keys(path)
    _check_keys(path, list(own), found)
    state = {found[name]: tensor.detach().clone() for name, tensor in own.items()}
    safe_load(state, path, no_dist=True)
    model.load_state_dict({name: state[found[name]] for name in own}, strict=True)
    return model


def load_model_for_inference(config: ModelConfig, checkpoint_dir: str, data=None) -> nn.Module:
    """The registered model of a complete ``config`` on CPU, unsharded, with the checkpoint's
    weights, in eval mode (no process group, no DistributedModelParallel); ``data`` (the run's
    ``PreparedData``) fits what a model computes from the training split (``model.rate_offset``)."""
    config.require_complete()
    model = build_model(config, device=torch.device("cpu"), data=data)
    load_weights(model, checkpoint_dir)
    return model.eval()
