"""Raw ids of a request -> table rows, exactly as ``dfgr data prepare`` mapped them.

A :class:`Vocabulary` holds one ``vocab_<name>.npy`` of a prepared data set (row ``r`` is
``ids[r - 1]``, row 0 is OOV) and the data config's OOV policy; the mapping itself is
:func:`dfgr_torchrec.data.vocab.vocab_rows`, the function prepare calls. An
:class:`ActionEncoder` turns a request's actions into the action row.

Example::

    vocabs = Vocabularies.from_prepared("data/prepared/movielens-1m-f7ca9a25c98d")
    rows, unknown = vocabs.item.rows(["1193", "no-such-movie"])   # tensor([r, 0]), 1
    vocabs.actions.row(action="4")                               # the row of rating 4
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from dfgr_torchrec.data.vocab import OOV_POLICIES, hash_bucket, table_rows, vocab_rows
from dfgr_torchrec.features import ACTION_FEATURE

INT64_CHARS = 20  # the longest int64 in decimal, sign included


@dataclass
class Vocabulary:
    """Raw ids -> rows of one table (``ids`` sorted, as prepare writes them: strings, or int64
    when every raw id of the column was an integer)."""

    name: str
    ids: np.ndarray
    oov: str = "oov"
    hash_buckets: int = 1024

    def __post_init__(self) -> None:
        if self.oov not in OOV_POLICIES:
            raise ValueError(f"vocabulary {self.name!r}: oov: expected one of {OOV_POLICIES}, got {self.oov!r}")
        self.ids = np.asarray(self.ids)
        self.ids = self.ids.astype(np.int64) if self.ids.dtype.kind in "iu" else self.ids.astype(str)
        if len(self.ids) > 1 and not bool((self.ids[1:] > self.ids[:-1]).all()):
            raise ValueError(f"vocabulary {self.name!r}: ids must be sorted and unique (as prepare writes them)")

    @property
    def num_rows(self) -> int:
        """Rows of the table this vocabulary indexes."""
        return table_rows(len(self.ids), self.oov, self.hash_buckets)

    def rows(self, raw_ids: Sequence[Any]) -> Tuple[torch.Tensor, int]:
        """``(int64 rows, how many ids are unknown)``; ids are compared as strings (``7`` is ``"7"``);
        with an integer vocabulary an id that is not an integer (``"7.0"``, ``"x"``) is unknown.

        The lookup is the vectorised binary search of training (no per-vocabulary dict: a large
        catalogue stays one sorted array); request ids are held at the vocabulary's own width, an
        id longer than every known id being unknown, so one long id never pads the others."""
        texts = [str(v) for v in raw_ids]
        width = max(1, self.ids.dtype.itemsize // 4) if self.ids.dtype.kind == "U" else INT64_CHARS
        long = [k for k, text in enumerate(texts) if len(text) > width]
        for k in long:
            texts[k] = ""
        rows, seen = vocab_rows(np.array(texts, dtype=f"<U{width}"), self.ids, self.oov, self.hash_buckets)
        for k in long:  # never in the vocabulary; hashed on the id itself
            seen[k] = False
            rows[k] = len(self.ids) + 1 + hash_bucket(str(raw_ids[k]), self.hash_buckets) if self.oov == "hash" else 0
        return torch.from_numpy(rows), int((~seen).sum())

    def save(self, directory: str) -> None:
        """Writes ``vocab_<name>.npy`` (no pickle) and ``vocab_<name>.json`` (the OOV policy)."""
        os.makedirs(directory, exist_ok=True)
        np.save(os.path.join(directory, f"vocab_{self.name}.npy"), self.ids, allow_pickle=False)
        with open(os.path.join(directory, f"vocab_{self.name}.json"), "w") as f:
            json.dump({"oov": self.oov, "hash_buckets": self.hash_buckets}, f)

    @classmethod
    def load(cls, directory: str, name: str) -> "Vocabulary":
        """The vocabulary :meth:`save` wrote."""
        path = os.path.join(directory, f"vocab_{name}.json")
        try:
            with open(path) as f:
                policy = json.load(f)
            oov, buckets = policy["oov"], int(policy["hash_buckets"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f'{path}: expected {{"oov", "hash_buckets"}} ({type(e).__name__}: {e}); export again'
            ) from None
        path = os.path.join(directory, f"vocab_{name}.npy")
        try:
            ids = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:  # an object (pickled) array, a damaged header
            raise ValueError(
                f"{path}: not a plain array of ids ({str(e).splitlines()[0][:200]}); export again"
            ) from None
        if not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.dtype.kind not in "iuU":
            raise ValueError(f"{path}: expected a 1-D array of string or integer ids; export again")
        return cls(name, ids, oov, buckets)


def check_task_names(actions: Mapping[str, Any], tasks: Sequence[str]) -> None:
    """Raises ``ValueError`` naming any task of ``actions`` the model does not have."""
    unknown = [name for name in actions if name not in tasks]
    if unknown:
        raise ValueError(f"unknown task name(s) {unknown}; the known tasks are {list(tasks)}")


class ActionEncoder:
    """A request's actions -> the action row prepare gives the same interaction.

    Without an action vocabulary the row is the bitmask of the tasks present with value 1
    (bit ``k`` for task ``k``); with one (a data set with ``action_feature``) it is the row of the
    raw action value.

    Example::

        ActionEncoder(["click", "like"]).row({"like": 1, "click": 0})   # 2
    """

    def __init__(self, tasks: Sequence[str], vocabulary: Optional[Vocabulary] = None) -> None:
        self.tasks = list(tasks)
        self.vocabulary = vocabulary

    @property
    def uses_vocabulary(self) -> bool:
        """True when requests give ``"action": <raw value>`` rather than ``"actions": {task: 0/1}``."""
        return self.vocabulary is not None

    def row(self, actions: Optional[Mapping[str, Any]] = None, action: Any = None) -> int:
        """The action row of one interaction; unknown task names and non-0/1 values are ``ValueError``."""
        if self.vocabulary is not None:
            if action is None:
                raise ValueError('expected "action": the raw action value (this data set has an action_feature)')
            return int(self.vocabulary.rows([action])[0][0])
        if actions is None:
            raise ValueError(f'expected "actions": {{task: 0 or 1}} over the tasks {self.tasks}')
        check_task_names(actions, self.tasks)
        mask = 0
        for name, value in actions.items():
            if isinstance(value, bool) or value not in (0, 1):
                raise ValueError(f"actions.{name}: expected 0 or 1, got {value!r}")
            mask |= int(value) << self.tasks.index(name)
        return mask


@dataclass
class Vocabularies:
    """Every vocabulary a request needs: items, item side features, users and actions."""

    tasks: List[str]
    item: Vocabulary
    user: Vocabulary
    side: Dict[str, Vocabulary] = field(default_factory=dict)
    action: Optional[Vocabulary] = None

    @property
    def actions(self) -> ActionEncoder:
        return ActionEncoder(self.tasks, self.action)

    @classmethod
    def from_prepared(cls, path: str) -> "Vocabularies":
        """The vocabularies of a prepared data set, with its config's OOV policy (from ``meta.json``)."""
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        policy = meta["config"]["vocab"]
        load = lambda name, oov=policy["oov"]: Vocabulary(  # noqa: E731
            name, np.load(os.path.join(path, f"vocab_{name}.npy"), allow_pickle=False), oov, int(policy["hash_buckets"])
        )
        has_action = os.path.exists(os.path.join(path, f"vocab_{ACTION_FEATURE}.npy"))
        return cls(
            tasks=list(meta["tasks"]),
            item=load("item"),
            user=load("user", "oov"),  # the user_id feature: prepared user index + 1, 0 unknown
            side={name: load(name) for name in meta["side_rows"]},
            action=load(ACTION_FEATURE) if has_action else None,
        )

    def save(self, directory: str) -> None:
        """Writes every vocabulary and ``vocabularies.json`` (tasks, side feature names)."""
        for vocab in self._all():
            vocab.save(directory)
        with open(os.path.join(directory, "vocabularies.json"), "w") as f:
            json.dump({"tasks": self.tasks, "side": list(self.side), "action": self.action is not None}, f)

    @classmethod
    def load(cls, directory: str) -> "Vocabularies":
        """What :meth:`save` wrote."""
        with open(os.path.join(directory, "vocabularies.json")) as f:
            info = json.load(f)
        return cls(
            tasks=info["tasks"],
            item=Vocabulary.load(directory, "item"),
            user=Vocabulary.load(directory, "user"),
            side={name: Vocabulary.load(directory, name) for name in info["side"]},
            action=Vocabulary.load(directory, ACTION_FEATURE) if info["action"] else None,
        )

    def _all(self) -> List[Vocabulary]:
        return [self.item, self.user, *self.side.values(), *([self.action] if self.action is not None else [])]


__all__ = ["ActionEncoder", "Vocabularies", "Vocabulary", "check_task_names"]
