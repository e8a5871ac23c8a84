"""The feature schema: KeyedJaggedTensor key names and their order.

The ground floor that batches, data sets and modules all import (it imports nothing of the
package). A batch's KJT holds, in this order:

- per history interaction (length ``N_b`` per user): ``item_id``, each item side feature,
  each action feature;
- per candidate (length ``M_b``): ``cand_item_id``, ``cand_<side>`` for each side feature;
- per user: each user/context feature (any number of ids).

Example::

    feature_names(side=["category"], actions=["action"])
    # ['item_id', 'category', 'action', 'cand_item_id', 'cand_category']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List

ITEM_FEATURE = "item_id"
ACTION_FEATURE = "action"  # the single action feature of a prepared data set (an action id per interaction)
USER_FEATURE = "user_id"  # a prepared data set's user, as a per-user feature (row = user index + 1)
CANDIDATE_PREFIX = "cand_"


def candidate_feature(name: str) -> str:
    """The KJT key of a candidate-side feature, e.g. ``item_id`` -> ``cand_item_id``."""
    return CANDIDATE_PREFIX + name


def is_candidate_feature(name: str) -> bool:
    return name.startswith(CANDIDATE_PREFIX)


def feature_names(
    side: Iterable[str] = (), actions: Iterable[str] = (ACTION_FEATURE,), users: Iterable[str] = ()
) -> List[str]:
    """Every KJT key a model reads, in the fixed order above."""
    side = list(side)
    history = [ITEM_FEATURE, *side, *actions]
    candidates = [candidate_feature(ITEM_FEATURE), *(candidate_feature(n) for n in side)]
    return history + candidates + list(users)


@dataclass
class DataSchema:
    """What a data set tells a model about itself: its tasks and the rows of its tables.

    Prepared data sets (``PreparedData.schema``) and generated ones produce it;
    :func:`dfgr_torchrec.config.fill_from_data` sizes a model config from it.

    Args:
        tasks: the label columns, in order (one logit each).
        item_rows: rows of the item table.
        action_rows: ``{action feature: rows}``.
        side_rows: ``{item side feature: rows}``.
        user_rows: ``{user feature: rows}``.
    """

    tasks: List[str]
    item_rows: int
    action_rows: Dict[str, int] = field(default_factory=lambda: {ACTION_FEATURE: 2})
    side_rows: Dict[str, int] = field(default_factory=dict)
    user_rows: Dict[str, int] = field(default_factory=dict)

    @property
    def feature_names(self) -> List[str]:
        return feature_names(self.side_rows, self.action_rows, self.user_rows)
