"""Ranking requests: JSONL lines -> :class:`Request` (raw values) -> :class:`EncodedRequest` (table rows).

One request per line::

    {"user": "u1",
     "history": [{"item": "i9", "actions": {"like": 1}, "timestamp": 1700000000, "category": "c3"}],
     "candidates": [{"item": "i7", "timestamp": 1700000100, "category": "c1"}]}

``user`` is optional; item side features are keys named like the feature; a data set with an
``action_feature`` takes ``"action": <raw value>`` instead of ``"actions"``; ``timestamp`` is
required when the model reads times. A bad line is a :class:`RequestError` with its 1-based line
number; the others are still returned, so a caller scores them.

Example::

    vocabs = Vocabularies.from_prepared(path)
    encoded, errors = read_requests("requests.jsonl", vocabs, needs_timestamps=True)
    for e in errors: print(e)            # "line 3: history[1].timestamp: expected an integer, got '12'"
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch

from dfgr_torchrec.config import MaskMode, ModelConfig
from dfgr_torchrec.serving.limits import RequestLimits, bounded_lines
from dfgr_torchrec.serving.vocab import Vocabularies, check_task_names

INT64 = (-(2**63), 2**63 - 1)


class RequestError(ValueError):
    """A request line that cannot be scored: ``line`` (1-based) and what was expected."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line, self.message = line, message


@dataclass
class RequestSchema:
    """What a request must carry: the item side features, the tasks, the action form, the times."""

    side: List[str]
    tasks: List[str]
    action_feature: bool = False
    needs_timestamps: bool = True
    limits: RequestLimits = field(default_factory=RequestLimits)

    @classmethod
    def of(
        cls, vocabs: Vocabularies, needs_timestamps: bool, limits: Optional[RequestLimits] = None
    ) -> "RequestSchema":
        return cls(
            list(vocabs.side),
            list(vocabs.tasks),
            vocabs.action is not None,
            needs_timestamps,
            limits or RequestLimits(),
        )


def needs_timestamps(config: ModelConfig) -> bool:
    """Whether the model reads times (time-gap encoding or session masks)."""
    buckets = getattr(config.interaction, "num_time_buckets", 0)  # the pointwise baselines encode no gaps
    return buckets > 0 or config.interaction.mask_mode == MaskMode.SESSION


@dataclass
class Interaction:
    """One history interaction or candidate, raw: ids as strings, actions as given."""

    item: str
    side: Dict[str, str] = field(default_factory=dict)
    timestamp: int = 0
    actions: Optional[Dict[str, int]] = None
    action: Optional[str] = None
    timed: bool = True  # the request gave its timestamp


@dataclass
class Request:
    """One parsed line."""

    line: int
    user: Optional[str]
    history: List[Interaction]
    candidates: List[Interaction]


@dataclass
class EncodedRequest:
    """A request as int64 table rows; ``unknown`` counts the ids each vocabulary did not know."""

    line: int
    user: torch.Tensor  # [1]: the user_id row (0: unknown or not given)
    history_items: torch.Tensor  # [N]
    history_side: Dict[str, torch.Tensor]  # {feature: [N]}
    history_actions: torch.Tensor  # [N]
    history_timestamps: torch.Tensor  # [N]
    candidate_items: torch.Tensor  # [M]
    candidate_side: Dict[str, torch.Tensor]  # {feature: [M]}
    candidate_timestamps: torch.Tensor  # [M]
    unknown: Dict[str, int] = field(default_factory=dict)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _raw_id(value: Any, where: str, limits: RequestLimits) -> str:
    if isinstance(value, str) or _is_int(value):
        text = str(value)
        if len(text) > limits.id_chars:
            raise ValueError(f"{where}: an id of {limits.exceeded('id_chars', len(text), 'characters')}")
        return text
    raise ValueError(f"{where}: expected an id (a string or an integer), got {value!r}")


def _check_keys(obj: Dict[str, Any], allowed: List[str], where: str) -> None:
    extra = [k for k in obj if k not in allowed]
    if extra:
        raise ValueError(f"{where}: unexpected key(s) {extra}; expected only {allowed}")


def _parse_actions(
    obj: Dict[str, Any], schema: RequestSchema, where: str
) -> Tuple[Optional[Dict[str, int]], Optional[str]]:
    if schema.action_feature:
        if "action" not in obj:
            raise ValueError(
                f"{where}.action: missing; expected the raw action value (this data set has an action_feature)"
            )
        return None, _raw_id(obj["action"], f"{where}.action", schema.limits)
    actions = obj.get("actions")
    if not isinstance(actions, dict):
        raise ValueError(
            f"{where}.actions: expected an object {{task: 0 or 1}} over the tasks {schema.tasks}, got {actions!r}"
        )
    try:
        check_task_names(actions, schema.tasks)
    except ValueError as e:
        raise ValueError(f"{where}.actions: {e}") from None
    for name, value in actions.items():
        if not (_is_int(value) and value in (0, 1)):
            raise ValueError(f"{where}.actions.{name}: expected 0 or 1, got {value!r}")
    return actions, None


def _parse_interaction(obj: Any, schema: RequestSchema, where: str, history: bool) -> Interaction:
    if not isinstance(obj, dict):
        raise ValueError(f'{where}: expected an object with "item", got {obj!r}')
    action_keys = (["action"] if schema.action_feature else ["actions"]) if history else []
    _check_keys(obj, ["item", "timestamp", *schema.side, *action_keys], where)
    if "item" not in obj:
        raise ValueError(f"{where}.item: missing; expected the item id")
    missing = [name for name in schema.side if name not in obj]
    if missing:
        raise ValueError(f"{where}: missing item side feature(s) {missing}")
    timestamp = obj.get("timestamp", 0)
    if schema.needs_timestamps and "timestamp" not in obj:
        raise ValueError(f"{where}.timestamp: missing; expected an integer (the model reads times)")
    if not _is_int(timestamp):
        raise ValueError(f"{where}.timestamp: expected an integer, got {timestamp!r}")
    if not INT64[0] <= timestamp <= INT64[1]:
        raise ValueError(
            f"{where}.timestamp: {timestamp} is beyond int64; expected an integer in [{INT64[0]}, {INT64[1]}]"
        )
    actions, action = _parse_actions(obj, schema, where) if history else (None, None)
    side = {name: _raw_id(obj[name], f"{where}.{name}", schema.limits) for name in schema.side}
    item = _raw_id(obj["item"], f"{where}.item", schema.limits)
    return Interaction(item, side, timestamp, actions, action, "timestamp" in obj)


def _interactions(obj: Dict[str, Any], key: str, schema: RequestSchema) -> List[Interaction]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise ValueError(f"{key}: expected a list of objects, got {value!r}")
    name = "history" if key == "history" else "candidates"
    if len(value) > getattr(schema.limits, name):
        raise ValueError(
            f"{key}: {schema.limits.exceeded(name, len(value), 'interactions' if name == 'history' else 'candidates')}"
        )
    return [_parse_interaction(x, schema, f"{key}[{i}]", key == "history") for i, x in enumerate(value)]


Line = Union[str, bytes, Dict[str, Any]]  # a JSONL line (text or raw bytes) or an already parsed request


def _decode(text: Any, line: int, limits: RequestLimits) -> Any:
    """The JSON object of one line, its size checked before it is decoded or parsed."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, (str, bytes)):
        raise RequestError(
            line, f"expected a JSONL line (str or bytes) or a parsed request (dict), got {type(text).__name__}"
        )
    size = len(text.rstrip(b"\r\n") if isinstance(text, bytes) else text.rstrip("\r\n").encode("utf-8", "replace"))
    if size > limits.line_bytes:
        raise RequestError(line, f"longer than the limit of {limits.line_bytes} bytes (--max-line-bytes); not parsed")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(
                line, f"not UTF-8 (byte 0x{text[e.start]:02x} at byte {e.start + 1}); expected UTF-8 JSON"
            ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RequestError(
            line, f"invalid JSON ({e.msg} at column {e.colno}); expected one JSON object per line"
        ) from None
    except RecursionError:
        raise RequestError(
            line, "invalid JSON (nested too deeply for the parser); expected one JSON object per line"
        ) from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise RequestError(line, f"invalid JSON ({str(e).splitlines()[0][:200]})") from None


def _check_order(history: List[Interaction], candidates: List[Interaction]) -> None:
    """Times must not decrease along the history, nor from its last interaction to any candidate."""
    times = [(f"history[{i}]", h.timestamp) for i, h in enumerate(history) if h.timed]
    for (_, before), (where, t) in zip(times, times[1:]):
        if t < before:
            raise ValueError(
                f"{where}.timestamp: {t} is before the previous one ({before}); "
                "expected non-decreasing timestamps along the history"
            )
    if times:
        last = times[-1][1]
        for i, c in enumerate(candidates):
            if c.timed and c.timestamp < last:
                raise ValueError(
                    f"candidates[{i}].timestamp: {c.timestamp} is before the last history timestamp "
                    f"({last}); expected non-decreasing timestamps from the history to the candidates"
                )


def parse_request(text: Line, line: int, schema: RequestSchema) -> Request:
    """One JSONL line (or its parsed dict) -> :class:`Request`; anything wrong is a :class:`RequestError` for ``line``."""
    obj = _decode(text, line, schema.limits)
    try:
        if not isinstance(obj, dict):
            raise ValueError(f'expected a JSON object with "history" and "candidates", got {type(obj).__name__}')
        _check_keys(obj, ["user", "history", "candidates"], "request")
        user = None if obj.get("user") is None else _raw_id(obj["user"], "user", schema.limits)
        history, candidates = _interactions(obj, "history", schema), _interactions(obj, "candidates", schema)
        if not candidates:
            raise ValueError("candidates: empty; expected at least one candidate to score")
        _check_order(history, candidates)
    except ValueError as e:
        raise RequestError(line, str(e)) from None
    return Request(line, user, history, candidates)


def parse_requests(lines: Iterable[Line], schema: RequestSchema) -> Tuple[List[Request], List[RequestError]]:
    """``(good requests, errors)`` of JSONL ``lines`` (blank lines are skipped; numbers count them)."""
    requests: List[Request] = []
    errors: List[RequestError] = []
    for number, text in enumerate(lines, start=1):
        if isinstance(text, (str, bytes)) and not text.strip():
            continue
        try:
            requests.append(parse_request(text, number, schema))
        except RequestError as e:
            errors.append(e)
    return requests, errors


def _rows(vocab, raw: List[str], name: str, unknown: Counter) -> torch.Tensor:
    rows, missed = vocab.rows(raw)
    unknown[name] += missed
    return rows


def encode_request(request: Request, vocabs: Vocabularies) -> EncodedRequest:
    """Table rows of a parsed request (unknown ids go where prepare sends them, and are counted)."""
    unknown: Counter = Counter()
    h, c = request.history, request.candidates
    user = (
        _rows(vocabs.user, [request.user], "user", unknown)
        if request.user is not None
        else torch.zeros(1, dtype=torch.int64)
    )
    encoder = vocabs.actions
    try:
        if encoder.uses_vocabulary:  # one lookup for the whole history
            if any(x.action is None for x in h):
                encoder.row(None, None)  # raises the message that names what is expected
            actions = _rows(encoder.vocabulary, [x.action for x in h], "action", unknown)
        else:
            actions = torch.tensor([encoder.row(x.actions, x.action) for x in h], dtype=torch.int64)
    except ValueError as e:
        raise RequestError(request.line, str(e)) from None
    side = lambda xs, name: _rows(vocabs.side[name], [x.side[name] for x in xs], name, unknown)  # noqa: E731
    return EncodedRequest(
        line=request.line,
        user=user,
        history_items=_rows(vocabs.item, [x.item for x in h], "item", unknown),
        history_side={name: side(h, name) for name in vocabs.side},
        history_actions=actions,
        history_timestamps=torch.tensor([x.timestamp for x in h], dtype=torch.int64),
        candidate_items=_rows(vocabs.item, [x.item for x in c], "item", unknown),
        candidate_side={name: side(c, name) for name in vocabs.side},
        candidate_timestamps=torch.tensor([x.timestamp for x in c], dtype=torch.int64),
        unknown=dict(unknown),
    )


def read_requests(
    path: str, vocabs: Vocabularies, needs_timestamps: bool = True
) -> Tuple[List[EncodedRequest], List[RequestError]]:
    """Parses and encodes a JSONL file: ``(encoded good requests, errors of the bad lines)``."""
    schema = RequestSchema.of(vocabs, needs_timestamps)
    with open(path, "rb") as f:
        requests, errors = parse_requests(bounded_lines(f, schema.limits.line_bytes), schema)
    encoded: List[EncodedRequest] = []
    for request in requests:
        try:
            encoded.append(encode_request(request, vocabs))
        except RequestError as e:
            errors.append(e)
    return encoded, sorted(errors, key=lambda e: e.line)
