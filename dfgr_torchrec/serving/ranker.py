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

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torchrec import KeyedJaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.config import model_config_from_dict, retarget
from dfgr_torchrec.features import ACTION_FEATURE, ITEM_FEATURE, candidate_feature
from dfgr_torchrec.models import build_model
from dfgr_torchrec.serving.cache import HistoryCache
from dfgr_torchrec.serving.compile import MAX_CACHED_TOKENS, MAX_CANDIDATES, load_scoring
from dfgr_torchrec.serving.graph import graph_inputs
from dfgr_torchrec.serving.history import HistoryState
from dfgr_torchrec.serving.limits import RequestLimits
from dfgr_torchrec.serving.rate_stats import RATES_FILE, has_rates, history_labels, load_rate_state
from dfgr_torchrec.serving.requests import (
    EncodedRequest,
    Request,
    RequestError,
    RequestSchema,
    encode_request,
    parse_requests,
)
from dfgr_torchrec.serving.scorer import CachedScorer
from dfgr_torchrec.serving.trust import VOCAB_DIR, WEIGHTS_FILE, artifact_dir, load_state, read_manifest  # noqa: F401 (API)
from dfgr_torchrec.serving.vocab import Vocabularies


@dataclass(eq=False)
class _CachedHistory:
    """A cached state and the rows of the history it was built from (to check a request extends it)."""

    state: HistoryState
    rows: torch.Tensor  # [N, features] item, side, action rows and timestamps of every interaction

    @property
    def nbytes(self) -> int:
        return self.state.nbytes + self.rows.numel() * self.rows.element_size()


def _load_rates(model: torch.nn.Module, directory: str, files: Dict[str, Any]) -> torch.Tensor:
    """Hands the artifact's ``rates.pt`` to ``model``'s rate features; returns each action's labels."""
    if RATES_FILE not in files:
        raise ValueError(
            f"{os.path.join(directory, 'artifact.json')}: no entry for {RATES_FILE} in files "
            "(the model reads rate features: model.rate_terms / model.rate_offset); export again"
        )
    return load_rate_state(model, os.path.join(directory, RATES_FILE))


class Ranker:
    """Scores requests in raw ids with an exported DFGR or MetaGR artifact (see :meth:`load`).

    Args:
        model: the unsharded model (eval mode).
        vocabs: raw id -> row for every feature.
        scoring: the compiled candidate graph, or None to score eagerly.
        cache_bytes: the history cache's budget (0 turns caching off).
        limits: the bounds of one request (:class:`RequestLimits`; its defaults when None).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        vocabs: Vocabularies,
        scoring: Optional[Callable[..., torch.Tensor]] = None,
        cache_bytes: int = 256 << 20,
        needs_timestamps: bool = True,
        limits: Optional[RequestLimits] = None,
        action_labels: Optional[torch.Tensor] = None,
    ) -> None:
        self.model = model.eval()
        self.scorer = CachedScorer(model)
        self.vocabs = vocabs
        self.scoring = scoring
        self.cache = HistoryCache(cache_bytes) if cache_bytes > 0 else None
        self.schema = RequestSchema.of(vocabs, needs_timestamps, limits)
        self.tasks = list(vocabs.tasks)
        self.unknown: Dict[str, int] = {}
        # [action rows, tasks]: the labels the rate features count for each history action (rates.pt)
        self.action_labels = action_labels

    @classmethod
    def load(
        cls,
        directory: str,
        cache_bytes: int = 256 << 20,
        compiled: bool = True,
        allow_native: bool = False,
        limits: Optional[RequestLimits] = None,
    ) -> "Ranker":
        """Loads an artifact written by ``dfgr export`` (or the run directory ``dfgr export --run``
        wrote one into); ``compiled=False`` scores with eager PyTorch.

        Only files listed and verified in ``artifact.json`` are read, and nothing of them runs as code:
        the exported program is checked to unpickle nothing. Its AOTInductor package (a shared
        library) is used only with ``allow_native=True``, when the caller trusts whoever wrote it.
        """
        directory = artifact_dir(directory)
        manifest = read_manifest(directory, program=compiled)
        try:
            # an older version recorded every type's keys: those the type does not read are left out
            config = model_config_from_dict(retarget(manifest["model"])[0])
            model = build_model(config, device=torch.device("cpu"))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"{os.path.join(directory, 'artifact.json')}: model: {e}; export again") from None
        load_state(model, os.path.join(directory, WEIGHTS_FILE))
        action_labels = _load_rates(model, directory, manifest["files"]) if has_rates(model) else None
        model.eval()
        if manifest["tables"] == "int8":
            from dfgr_torchrec.serving.quantize import quantize_tables

            quantize_tables(model)
        vocabs = Vocabularies.load(os.path.join(directory, VOCAB_DIR))
        scoring = load_scoring(directory, allow_native, manifest["files"]) if compiled else None
        return cls(model, vocabs, scoring, cache_bytes, bool(manifest["needs_timestamps"]), limits, action_labels)

    def score_lines(self, lines: Iterable[Any]) -> Tuple[List[Dict[str, Any]], List[RequestError]]:
        """Scores every good JSONL line (``str`` or ``bytes``; a ``dict`` is an already parsed request);
        returns ``(results, errors)``, each naming its line."""
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
        rates = self._rate_logits(encoded)  # first: a request it refuses is not cached
        state = self._state(request.user, encoded)
        logits = self._logits(state, encoded)
        probabilities = torch.sigmoid(logits if rates is None else logits + rates).tolist()
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
            state = self.scorer.encode(self._batch(encoded, self._window(encoded), candidates=False))[0]
        if self.cache is not None and user is not None:
            self.cache.put(user, _CachedHistory(state, rows))
        return state

    def _window(self, encoded: EncodedRequest) -> slice:
        """The newest ``max_seq_len`` history interactions: what a fresh encode and the recipe's evaluation see."""
        return slice(max(encoded.history_items.shape[0] - self.model.config.interaction.max_seq_len, 0), None)

    def _batch(self, encoded: EncodedRequest, history: slice, candidates: bool) -> SequenceBatch:
        return request_batch(encoded, history, candidates, list(self.model.config.embeddings.user_vocab_sizes))

    def _logits(self, state: HistoryState, encoded: EncodedRequest) -> torch.Tensor:
        batch = self._batch(encoded, slice(0, 0), candidates=True)
        tokens, m = state.order_keys.shape[0], batch.candidate_timestamps.shape[0]
        if self.scoring is None or not (1 <= tokens <= MAX_CACHED_TOKENS and m <= MAX_CANDIDATES):  # the graph's bounds
            return self.scorer.score([state], batch).values()
        embedded = self.model.embedding(batch.features).candidates.values()
        repeat = self.scorer.candidate_repeat([state], batch)  # outside the graph, like the lookups
        embedded = embedded if repeat is None else embedded + repeat
        logits = self.scoring(*graph_inputs(self.model.interaction, state, embedded, batch.candidate_timestamps))
        return self.model.with_bias_terms(logits, batch.features, candidates=True)  # outside the exported graph

    def _rate_logits(self, encoded: EncodedRequest) -> Optional[torch.Tensor]:
        """``[M, num_tasks]`` the rate terms and offset of the candidates, None without them: they
        count the labels of the history the recipe's evaluation shows (the newest ``max_seq_len``)."""
        if not has_rates(self.model):
            return None
        if self.action_labels is None:
            raise RuntimeError("this model reads rate features: load its artifact with Ranker.load")
        window = self._window(encoded)
        try:
            labels = history_labels(self.action_labels, encoded.history_actions[window], window.start)
        except ValueError as e:
            raise RequestError(encoded.line, str(e)) from None
        batch = self._batch(encoded, window, candidates=True)
        return self.model.rate_logits(dataclasses.replace(batch, labels=labels), candidates=True)


def history_rows(encoded: EncodedRequest) -> torch.Tensor:
    """``[N, features]``: what identifies each history interaction (rows and timestamp)."""
    columns = [
        encoded.history_items,
        *encoded.history_side.values(),
        encoded.history_actions,
        encoded.history_timestamps,
    ]
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
