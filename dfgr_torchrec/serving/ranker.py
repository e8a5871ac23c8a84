"""The serving API: load an exported artifact, score raw-id requests, keep users' histories cached.

Example::

    ranker = Ranker.load("artifacts/dfgr-movielens", cache_bytes=256 << 20)
    results, errors = ranker.score_lines(open("requests.jsonl"))
    results[0]["scores"][0]       # {"item": "i7", "like": 0.83}
    ranker.cache.stats.as_dict()  # hits, misses, evictions, bytes, entries

A user's history is encoded once; a later request whose history extends the cached one (same
interactions first, in order) only computes the new interactions (:func:`append_history`), and
candidates are scored against the cache by the compiled graph. Loading needs neither the
training code nor the data set: the model config, weights, vocabularies and the exported graph
are in the artifact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torchrec import KeyedJaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.config import RankingModelConfig, from_dict
from dfgr_torchrec.data.atomic import file_digest
from dfgr_torchrec.features import ACTION_FEATURE, ITEM_FEATURE, candidate_feature
from dfgr_torchrec.models import build_model
from dfgr_torchrec.serving.cache import HistoryCache
from dfgr_torchrec.serving.compile import load_scoring
from dfgr_torchrec.serving.export import ARTIFACT_FILE, FORMAT_VERSION, VOCAB_DIR, WEIGHTS_FILE
from dfgr_torchrec.serving.graph import graph_inputs
from dfgr_torchrec.serving.history import HistoryState
from dfgr_torchrec.serving.requests import (
    EncodedRequest,
    Request,
    RequestError,
    RequestSchema,
    encode_request,
    parse_requests,
)
from dfgr_torchrec.serving.scorer import CachedScorer
from dfgr_torchrec.serving.vocab import Vocabularies


@dataclass(eq=False)
class _CachedHistory:
    """A cached state and the rows of the history it was built from (to check a request extends it)."""

    state: HistoryState
    rows: torch.Tensor  # [N, features] item, side, action rows and timestamps of every interaction

    @property
    def nbytes(self) -> int:
        return self.state.nbytes + self.rows.numel() * self.rows.element_size()


class Ranker:
    """Scores requests in raw ids with an exported DFGR or MetaGR artifact (see :meth:`load`).

    Args:
        model: the unsharded model (eval mode).
        vocabs: raw id -> row for every feature.
        scoring: the compiled candidate graph, or None to score eagerly.
        cache_bytes: the history cache's budget (0 turns caching off).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        vocabs: Vocabularies,
        scoring: Optional[Callable[..., torch.Tensor]] = None,
        cache_bytes: int = 256 << 20,
        needs_timestamps: bool = True,
    ) -> None:
        self.model = model.eval()
        self.scorer = CachedScorer(model)
        self.vocabs = vocabs
        self.scoring = scoring
        self.cache = HistoryCache(cache_bytes) if cache_bytes > 0 else None
        self.schema = RequestSchema.of(vocabs, needs_timestamps)
        self.tasks = list(vocabs.tasks)
        self.unknown: Dict[str, int] = {}

    @classmethod
    def load(cls, directory: str, cache_bytes: int = 256 << 20, compiled: bool = True) -> "Ranker":
        """Loads an artifact written by ``dfgr export``; ``compiled=False`` scores with eager PyTorch."""
        manifest = read_manifest(directory)
        config = from_dict(RankingModelConfig, manifest["model"], "model")
        model = build_model(config, device=torch.device("cpu"))
        model.load_state_dict(torch.load(os.path.join(directory, WEIGHTS_FILE), weights_only=True), strict=True)
        model.eval()
        if manifest["tables"] == "int8":
            from dfgr_torchrec.serving.quantize import quantize_tables

            quantize_tables(model)
        vocabs = Vocabularies.load(os.path.join(directory, VOCAB_DIR))
        scoring = load_scoring(directory) if compiled else None
        return cls(model, vocabs, scoring, cache_bytes, manifest["needs_timestamps"])

    def score_lines(self, lines: Iterable[str]) -> Tuple[List[Dict[str, Any]], List[RequestError]]:
        """Scores every good JSONL line; returns ``(results, errors)``, each naming its line."""
        requests, errors = parse_requests(lines, self.schema)
        results = []
        for request in requests:
            try:
                results.append(self.score(request))
            except RequestError as e:
                errors.append(e)
        return results, sorted(errors, key=lambda e: e.line)

    @torch.no_grad()
    def score(self, request: Request) -> Dict[str, Any]:
        """``{"line", "user", "scores": [{"item": raw id, <task>: probability, ...}]}`` of one request."""
        encoded = encode_request(request, self.vocabs)
        for name, count in encoded.unknown.items():
            self.unknown[name] = self.unknown.get(name, 0) + count
        state = self._state(request.user, encoded)
        probabilities = torch.sigmoid(self._logits(state, encoded)).tolist()
        scores = [
            {"item": c.item, **{task: p for task, p in zip(self.tasks, row)}}
            for c, row in zip(request.candidates, probabilities)
        ]
        return {"line": request.line, "user": request.user, "scores": scores}

    def _state(self, user: Optional[str], encoded: EncodedRequest) -> HistoryState:
        rows = history_rows(encoded)
        cached = self.cache.get(user) if self.cache is not None and user is not None else None
        n = 0 if cached is None else cached.rows.shape[0]
        if cached is not None and n <= rows.shape[0] and torch.equal(rows[:n], cached.rows):
            state = cached.state
            if rows.shape[0] > n:
                state = self.scorer.append(state, self._batch(encoded, slice(n, None), candidates=False))
        else:
            window = slice(max(rows.shape[0] - self.model.config.interaction.max_seq_len, 0), None)
            state = self.scorer.encode(self._batch(encoded, window, candidates=False))[0]
        if self.cache is not None and user is not None:
            self.cache.put(user, _CachedHistory(state, rows))
        return state

    def _batch(self, encoded: EncodedRequest, history: slice, candidates: bool) -> SequenceBatch:
        return request_batch(encoded, history, candidates, list(self.model.config.embeddings.user_vocab_sizes))

    def _logits(self, state: HistoryState, encoded: EncodedRequest) -> torch.Tensor:
        batch = self._batch(encoded, slice(0, 0), candidates=True)
        if self.scoring is None or state.order_keys.shape[0] == 0:  # the graph needs >= 1 cached token
            return self.scorer.score([state], batch).values()
        embedded = self.model.embedding(batch.features).candidates.values()
        logits = self.scoring(*graph_inputs(self.model.interaction, state, embedded, batch.candidate_timestamps))
        return self.model.with_bias_terms(logits, batch.features, candidates=True)  # outside the exported graph


def read_manifest(directory: str) -> Dict[str, Any]:
    """``artifact.json``, after checking the format and that every file has its recorded size and digest."""
    path = os.path.join(directory, ARTIFACT_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory}: not a serving artifact (no {ARTIFACT_FILE}); write one with `dfgr export`")
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: artifact format {manifest.get('format')!r}, this version reads {FORMAT_VERSION}")
    for name, record in manifest["files"].items():
        file = os.path.join(directory, name)
        if not os.path.isfile(file) or os.path.getsize(file) != record["bytes"] or file_digest(file) != record["blake2b"]:
            raise ValueError(f"{file}: missing or changed since export (size/digest differ from {ARTIFACT_FILE}); export again")
    return manifest


def history_rows(encoded: EncodedRequest) -> torch.Tensor:
    """``[N, features]``: what identifies each history interaction (rows and timestamp)."""
    columns = [encoded.history_items, *encoded.history_side.values(), encoded.history_actions, encoded.history_timestamps]
    return torch.stack(columns, dim=1)


def request_batch(
    encoded: EncodedRequest, history: slice, candidates: bool, user_features: Sequence[str] = ()
) -> SequenceBatch:
    """A one-user :class:`SequenceBatch` of ``encoded``: the ``history`` slice, its candidates or none,
    and the user's row for each of ``user_features`` (those the model has)."""
    per_key = {ITEM_FEATURE: encoded.history_items[history]}
    per_key.update({name: rows[history] for name, rows in encoded.history_side.items()})
    per_key[ACTION_FEATURE] = encoded.history_actions[history]
    empty = encoded.candidate_items[:0]
    per_key[candidate_feature(ITEM_FEATURE)] = encoded.candidate_items if candidates else empty
    per_key.update({candidate_feature(n): (r if candidates else r[:0]) for n, r in encoded.candidate_side.items()})
    per_key.update({name: encoded.user for name in user_features})
    keys = list(per_key)
    times = encoded.candidate_timestamps if candidates else encoded.candidate_timestamps[:0]
    return SequenceBatch(
        features=KeyedJaggedTensor(
            keys=keys,
            values=torch.cat([per_key[k] for k in keys]),
            lengths=torch.tensor([per_key[k].shape[0] for k in keys], dtype=torch.int64),
        ),
        timestamps=encoded.history_timestamps[history],
        labels=torch.zeros(0),
        candidate_timestamps=times,
        candidate_labels=torch.zeros(0),
    )

