"""Configuration dataclasses for the DFGR / MetaGR modules.

Every field is typed and validated in ``__post_init__`` so a bad value fails where it is set,
with the field's name in the message.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

from dfgr_torchrec.features import (
    ACTION_FEATURE,
    CANDIDATE_PREFIX,
    ITEM_FEATURE,
    DataSchema,
    feature_names,
    is_candidate_feature,
)
from dfgr_torchrec.ops.kinds import AttentionForm, AttentionKernel


class MaskMode(str, enum.Enum):
    """Which earlier interactions a prediction may look at."""

    POSITION = "position"  # interaction i sees interactions j < i
    SESSION = "session"  # interaction i sees interactions with t_j < t_i (same-timestamp items never see each other's actions)


class UserContext(str, enum.Enum):
    """Where the generative models put the user's context embedding."""

    ADD = "add"  # added to every item and candidate token of the user
    TOKEN = "token"  # one token before the user's history, seen by every later token


class MergeOp(str, enum.Enum):
    """How the item and action embeddings of one interaction become one token."""

    SUM = "sum"
    CONCAT = "concat"  # concat(item, action) -> Linear -> d_model


# The built-in model types, ``model.type`` -> ``module:class``: the registry of
# ``dfgr_torchrec.models`` is built from this table (add a type here), and a config is checked
# against it without importing torch. ``register_model`` adds types at run time.
BUILTIN_MODELS = {
    "dfgr": "dfgr_torchrec.models.ranking:DFGRRankingModel",
    "metagr": "dfgr_torchrec.models.ranking:MetaGRRankingModel",
    "bias": "dfgr_torchrec.models.bias:BiasModel",
    "logreg": "dfgr_torchrec.models.logreg:LogRegModel",
    "dlrm": "dfgr_torchrec.models.dlrm:DLRMModel",
    "dcn": "dfgr_torchrec.models.dlrm:DCNModel",
    "deepfm": "dfgr_torchrec.models.deepfm:DeepFMModel",
    "hstu": "dfgr_torchrec.models.hstu:HSTUModel",
    "din": "dfgr_torchrec.models.din:DINModel",
}
DEFAULT_MODEL_TYPE = "dfgr"  # what a ``model:`` node without ``type`` builds
REPEAT_FEATURE_MODELS = ("dfgr", "metagr", "dlrm", "dcn", "deepfm")  # the types that read ``embeddings.repeat_feature``
# The one registry every check asks (the CLI, the recipe, ``build_model``), torch-free: the
# built-in types and those ``dfgr_torchrec.models.register_model`` added in this process.
MODEL_TYPES: Dict[str, Any] = dict(BUILTIN_MODELS)


def check_model_type(name: Any) -> None:
    """``model.type`` must name a built-in or registered type (the same answer whatever is imported)."""
    if name not in MODEL_TYPES:
        raise ValueError(f"model.type: expected one of {sorted(MODEL_TYPES)}, got {name!r}")


def check(condition: bool, key: str, expected: str, value: Any) -> None:
    """Raises ``ValueError("<key>: expected <expected>, got <value>")`` unless ``condition``."""
    if not condition:
        raise ValueError(f"{key}: expected {expected}, got {value!r}")


def _enum(enum_type: Type[enum.Enum], key: str, value: Any) -> Any:
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(repr(e.value) for e in enum_type)
        raise ValueError(f"{key}: expected one of {choices}, got {value!r}") from None


@dataclass
class InteractionConfig:
    """Hyper-parameters of the sequence interaction stack (shared by DFGR and MetaGR).

    Args:
        d_model: width of the token states.
        num_layers: number of stacked blocks.
        num_heads: attention heads per block.
        attention_dim: query/key width per head.
        linear_dim: value/gate width per head.
        attention_form: ``"pointwise"`` (HSTU SiLU attention) or ``"softmax"``.
        mask_mode: ``"position"`` or ``"session"`` (needs timestamps).
        max_seq_len: longest sequence the position table covers; also the constant that
            scales pointwise attention, so scores do not depend on how a batch is padded.
        num_time_buckets: log2 buckets of the gap to the previous interaction (0 turns
            time encoding off).
        use_position_encoding: add a learned absolute position embedding.
        dropout: dropout on the block outputs.
        kernel: attention implementation: ``"auto"`` (the default: ``"triton"`` on CUDA when
            Triton imports; else ``"tiled"`` once a batch's longest sequence reaches
            ``ops.attention.TILED_FROM_LEN`` tokens, where it measured faster, else ``"padded"``),
            ``"triton"``, ``"padded"``, ``"tiled"`` or ``"reference"``.
        norm_eps: epsilon of the block's LayerNorms. Pointwise attention outputs are small at
            initialisation (a sum of ``SiLU`` weights divided by ``attention_scale_len``), so an
            epsilon near their variance damps the attention branch; see docs/studies.md's ablation.
        attention_scale_len: the pointwise normaliser (None: ``max_seq_len``). A constant, so a
            score never depends on the other users of its batch (Meta's HSTU divides by the
            batch's longest sequence instead).
    """

    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 2
    attention_dim: int = 32
    linear_dim: int = 32
    attention_form: AttentionForm = AttentionForm.POINTWISE
    mask_mode: MaskMode = MaskMode.POSITION
    max_seq_len: int = 1024
    num_time_buckets: int = 64
    use_position_encoding: bool = True
    dropout: float = 0.0
    kernel: AttentionKernel = AttentionKernel.AUTO
    norm_eps: float = 1e-5
    attention_scale_len: Optional[int] = None

    def __post_init__(self) -> None:
        for key in ("d_model", "num_layers", "num_heads", "attention_dim", "linear_dim", "max_seq_len"):
            value = getattr(self, key)
            check(isinstance(value, int) and value > 0, key, "a positive integer", value)
        scale = self.attention_scale_len
        check(
            scale is None or (isinstance(scale, int) and scale > 0),
            "attention_scale_len",
            "a positive integer or null",
            scale,
        )
        check(
            isinstance(self.norm_eps, (int, float)) and 0 < self.norm_eps < 1,
            "norm_eps",
            "a float in (0, 1)",
            self.norm_eps,
        )
        check(
            isinstance(self.num_time_buckets, int) and self.num_time_buckets >= 0,
            "num_time_buckets",
            "an integer >= 0",
            self.num_time_buckets,
        )
        check(0.0 <= float(self.dropout) < 1.0, "dropout", "a float in [0, 1)", self.dropout)
        self.attention_form = _enum(AttentionForm, "attention_form", self.attention_form)
        self.mask_mode = _enum(MaskMode, "mask_mode", self.mask_mode)
        self.kernel = _enum(AttentionKernel, "kernel", self.kernel)

    @property
    def pointwise_scale_len(self) -> int:
        """The constant pointwise attention divides by."""
        return self.attention_scale_len or self.max_seq_len


@dataclass
class SequenceEmbeddingConfig:
    """Embedding tables for the behaviour sequence.

    The table sizes come from the data: left unset in a training YAML, they are filled by
    :func:`fill_from_data`; set them when building a model by hand.

    Args:
        item_vocab_size: rows of the item table (ids 0..item_vocab_size-1).
        action_vocab_sizes: one table per action feature, ``{feature name: rows}``. A
            multi-hot action set is either one feature holding a bitmask id (rows = 2**types)
            or one feature per action type; the action embedding is the sum over features.
        item_side_vocab_sizes: optional item side features (e.g. category), ``{name: rows}``;
            known at prediction time, so they enter both flows and the candidates.
        user_vocab_sizes: optional user/context features (e.g. ``user_id``, age bucket),
            ``{name: rows}``, any number of ids per user (summed); the user's context
            embedding is added to every item and candidate token of that user.
        embedding_dim: width of every table.
        merge: how item and action embeddings become one token: ``"concat"`` (concat + linear,
            the default: it won on MovieLens-1M) or ``"sum"``.
        dropout: dropout on every looked-up embedding (items, actions, candidates) in training,
            a regulariser against the tables memorising their rows (0: off).
        user_context: where DFGR and MetaGR put the user features: ``"add"`` (onto every item
            and candidate token) or ``"token"`` (one context token before the history, which
            every history token and candidate attends to, as generative-recommenders prepends
            its contextual features). The pointwise models always keep them as a feature.
        repeat_feature: DFGR, MetaGR, DLRM, DCN and DeepFM: add a learned "repeat" embedding to every
            fake-flow token and candidate (MetaGR: every item token; the pointwise models: every
            sample's target) whose item occurs earlier in the user's
            history: the action of the latest earlier occurrence plus a log2 bucket of how many
            interactions ago it was (a token sees only strictly earlier interactions, never its own
            label). Off by default; see docs/architecture.md ("The repeat feature").
    """

    item_vocab_size: Optional[int] = None
    action_vocab_sizes: Dict[str, int] = field(default_factory=lambda: {ACTION_FEATURE: 2})
    item_side_vocab_sizes: Dict[str, int] = field(default_factory=dict)
    user_vocab_sizes: Dict[str, int] = field(default_factory=dict)
    embedding_dim: int = 64
    merge: MergeOp = MergeOp.CONCAT  # won on MovieLens-1M: AUC 0.7976 / GAUC 0.6978 vs 0.7905 / 0.6859 for sum
    dropout: float = 0.0
    user_context: UserContext = UserContext.ADD
    repeat_feature: bool = False

    def __post_init__(self) -> None:
        check(isinstance(self.repeat_feature, bool), "repeat_feature", "true or false", self.repeat_feature)
        if self.item_vocab_size is not None:
            _positive_int(self.item_vocab_size, "item_vocab_size")
        _positive_int(self.embedding_dim, "embedding_dim")
        check(
            len(self.action_vocab_sizes) > 0,
            "action_vocab_sizes",
            "at least one action feature",
            self.action_vocab_sizes,
        )
        groups = ("action_vocab_sizes", "item_side_vocab_sizes", "user_vocab_sizes")
        for group in groups:
            for name, rows in getattr(self, group).items():
                _positive_int(rows, f"{group}.{name}")
        names = [ITEM_FEATURE, *(name for group in groups for name in getattr(self, group))]
        check(len(set(names)) == len(names), "/".join(groups), "unique feature names", names)
        check(
            not any(is_candidate_feature(n) for n in names),
            "/".join(groups),
            f"no name starting with '{CANDIDATE_PREFIX}'",
            names,
        )
        self.merge = _enum(MergeOp, "merge", self.merge)
        self.user_context = _enum(UserContext, "user_context", self.user_context)
        check(0.0 <= float(self.dropout) < 1.0, "dropout", "a float in [0, 1)", self.dropout)

    @property
    def feature_names(self) -> List[str]:
        """Every KJT key the embedding module reads, in the schema's order."""
        return feature_names(self.item_side_vocab_sizes, self.action_vocab_sizes, self.user_vocab_sizes)


@dataclass
class TaskConfig:
    """One prediction task: a binary label per interaction (e.g. ``like``) and its loss weight."""

    name: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and self.name != "", "name", "a non-empty string", self.name)
        check(float(self.weight) >= 0.0, "weight", "a weight >= 0", self.weight)


@dataclass
class HistoryMaskConfig:
    """``model.interaction`` of the pointwise baselines without layers (``bias``, ``logreg``, ``din``):
    ``mask_mode``, which earlier interactions a sample's history holds (as DFGR's fake tokens see)."""

    mask_mode: MaskMode = MaskMode.POSITION

    def __post_init__(self) -> None:
        self.mask_mode = _enum(MaskMode, "mask_mode", self.mask_mode)


@dataclass
class ArchInteractionConfig(HistoryMaskConfig):
    """``model.interaction`` of DLRM, DCN and DeepFM: the history mask and ``dropout`` on the
    feature interaction's output."""

    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 <= float(self.dropout) < 1.0, "dropout", "a float in [0, 1)", self.dropout)


@dataclass
class ModelConfig:
    """What every model type reads: its registered ``type``, the embedding tables and the tasks.

    Each type's config (:data:`MODEL_CONFIGS`) adds only the keys that type reads, so a key set for
    a model that ignores it is an error naming the key (:func:`model_config_from_dict`). In a training
    YAML the ``model:`` node is one of them, chosen by its ``type``; what the data decides (table sizes,
    the task list) is left out and filled by :func:`fill_from_data`, and ``tasks`` may list some tasks
    by name to weight them (the others weigh 1).
    """

    type: str = DEFAULT_MODEL_TYPE
    embeddings: SequenceEmbeddingConfig = field(default_factory=SequenceEmbeddingConfig)
    tasks: List[TaskConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        check(isinstance(self.type, str) and self.type != "", "type", "a registered model type", self.type)
        expected = MODEL_CONFIGS.get(self.type)
        check(
            expected is None or isinstance(self, expected),
            "type",
            f"a type {type(self).__name__} configures (model type {self.type!r} takes "
            f"{getattr(expected, '__name__', '')}: model_config({self.type!r}, ...))",
            self.type,
        )
        if isinstance(self.embeddings, Mapping):
            self.embeddings = from_dict(SequenceEmbeddingConfig, self.embeddings, "embeddings")
        for name, section in sections(type(self)).items():
            if isinstance(getattr(self, name), Mapping):
                setattr(self, name, from_dict(section, getattr(self, name), name))
        self.tasks = [
            from_dict(TaskConfig, t, f"tasks[{i}]") if isinstance(t, Mapping) else t for i, t in enumerate(self.tasks)
        ]
        names = [t.name for t in self.tasks]
        check(len(set(names)) == len(names), "tasks", "unique task names", names)
        check(
            not self.embeddings.repeat_feature or self.type in REPEAT_FEATURE_MODELS,
            "embeddings.repeat_feature",
            f"false for model type {self.type!r} (only {', '.join(REPEAT_FEATURE_MODELS)} read it)",
            True,
        )
        for i, h in enumerate(getattr(self, "head_hidden_dims", ())):
            check(isinstance(h, int) and h > 0, f"head_hidden_dims[{i}]", "a positive integer", h)

    @property
    def task_names(self) -> List[str]:
        return [t.name for t in self.tasks]

    def require_complete(self) -> None:
        """Raises unless the sizes a model needs are set (by hand or by :func:`fill_from_data`)."""
        check(
            self.embeddings.item_vocab_size is not None,
            "embeddings.item_vocab_size",
            "a size (or fill_from_data)",
            None,
        )
        check(len(self.tasks) > 0, "tasks", "at least one task", self.tasks)


def _check_rate_prior(prior: Any) -> None:
    check(
        isinstance(prior, (int, float)) and not isinstance(prior, bool) and prior > 0,
        "rate_prior",
        "a number > 0",
        prior,
    )


@dataclass
class RankingModelConfig(ModelConfig):
    """DFGR and MetaGR (``type: dfgr | metagr``): embeddings, the interaction stack, multi-task heads,
    and the optional per-task bias and rate terms on the logits.

    ``d_model`` of the interaction must equal ``embedding_dim`` when ``merge="sum"``;
    with ``merge="concat"`` a linear layer maps to ``d_model``.

    Example::

        config = RankingModelConfig(
            embeddings=SequenceEmbeddingConfig(item_vocab_size=10_000, embedding_dim=64),
            tasks=[TaskConfig("like"), TaskConfig("follow", weight=0.5)],
        )
    """

    interaction: InteractionConfig = field(default_factory=InteractionConfig)
    head_hidden_dims: List[int] = field(default_factory=lambda: [64])
    head_per_task: bool = False  # one head MLP (tower) per task instead of one shared by the tasks
    bias_terms: bool = False  # add per-task item, side-feature and user biases to the logits
    # add logreg's per-task rate features (smoothed item and user rates, log counts) through a
    # learned per-task linear term to the logits (models/rates.py; export refuses it)
    rate_terms: bool = False
    # add logreg's own logits (all four rate features, fitted in closed form on the training rows) as
    # a frozen offset to the logits, the head's output layer starting at zero: the model starts as the
    # floor and learns the residual (models/rates.py; export refuses it)
    rate_offset: bool = False
    rate_prior: float = 10.0  # rate_terms, rate_offset: pseudo-rows of the global rate in the smoothed rates

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_rate_prior(self.rate_prior)
        for name in ("head_per_task", "bias_terms", "rate_terms", "rate_offset"):
            check(isinstance(getattr(self, name), bool), name, "true or false", getattr(self, name))
        check(
            not (self.rate_terms and self.rate_offset),
            "rate_offset",
            "false when rate_terms is true (the offset holds the rates the terms would learn)",
            self.rate_offset,
        )
        if self.embeddings.merge == MergeOp.SUM:
            check(
                self.embeddings.embedding_dim == self.interaction.d_model,
                "interaction.d_model",
                f"embedding_dim ({self.embeddings.embedding_dim}) when merge is 'sum'",
                self.interaction.d_model,
            )


@dataclass
class HSTUModelConfig(ModelConfig):
    """``type: hstu`` (generative-recommenders' ranker): embeddings, the STU stack, the heads and
    ``num_targets``, the training targets per window (None: Meta's 8)."""

    type: str = "hstu"
    interaction: InteractionConfig = field(default_factory=InteractionConfig)
    head_hidden_dims: List[int] = field(default_factory=lambda: [64])
    num_targets: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        targets = self.num_targets
        check(
            targets is None or (isinstance(targets, int) and not isinstance(targets, bool) and targets > 0),
            "num_targets",
            "a positive integer or null",
            targets,
        )


@dataclass
class ArchModelConfig(ModelConfig):
    """``type: dlrm | dcn | deepfm``: embeddings, the history mask, dropout on the feature
    interaction and the over arch's ``head_hidden_dims``."""

    type: str = "dcn"
    interaction: ArchInteractionConfig = field(default_factory=ArchInteractionConfig)
    head_hidden_dims: List[int] = field(default_factory=lambda: [64])


@dataclass
class DINModelConfig(ModelConfig):
    """``type: din``: embeddings, the history mask and the output MLP's ``head_hidden_dims``."""

    type: str = "din"
    interaction: HistoryMaskConfig = field(default_factory=HistoryMaskConfig)
    head_hidden_dims: List[int] = field(default_factory=lambda: [64])


@dataclass
class LogRegModelConfig(ModelConfig):
    """``type: logreg``: the bias tables, the history mask (the user rates' history) and
    ``rate_prior``, the pseudo-rows of the global rate in the smoothed item and user rates."""

    type: str = "logreg"
    interaction: HistoryMaskConfig = field(default_factory=HistoryMaskConfig)
    rate_prior: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_rate_prior(self.rate_prior)


@dataclass
class BiasModelConfig(ModelConfig):
    """``type: bias``: per-task item, side-feature and user biases (and the history mask)."""

    type: str = "bias"
    interaction: HistoryMaskConfig = field(default_factory=HistoryMaskConfig)


@functools.lru_cache(maxsize=None)
def sections(cls: type) -> Dict[str, type]:
    """The sections of a model config besides ``embeddings``, ``{field: dataclass}`` (its ``interaction``)."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if f.name != "embeddings" and dataclasses.is_dataclass(hints[f.name])
    }


# Each built-in type's config: what ``model_config_from_dict`` builds for ``model.type``.
# ``dfgr_torchrec.models.register_model`` adds a registered type's (RankingModelConfig by default).
MODEL_CONFIGS: Dict[str, Type[ModelConfig]] = {
    "dfgr": RankingModelConfig,
    "metagr": RankingModelConfig,
    "hstu": HSTUModelConfig,
    "bias": BiasModelConfig,
    "logreg": LogRegModelConfig,
    "dlrm": ArchModelConfig,
    "dcn": ArchModelConfig,
    "deepfm": ArchModelConfig,
    "din": DINModelConfig,
}


def config_keys(cls: type) -> List[str]:
    """The dotted keys a model config reads, its sections' keys included (``interaction.dropout``)."""
    inner = sections(cls)
    keys = []
    for f in dataclasses.fields(cls):
        if f.name in inner:
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(inner[f.name])]
        else:
            keys.append(f.name)
    return keys


def unread_keys(kind: str, data: Mapping[str, Any]) -> List[str]:
    """The keys of a ``model:`` mapping that model type ``kind`` does not read but another type does
    (dotted, sorted); a key no type reads is left to :func:`from_dict`, which calls it unknown."""
    cls = MODEL_CONFIGS[kind]
    known, inner = set(config_keys(cls)), sections(cls)
    anyone = {k for c in set(MODEL_CONFIGS.values()) for k in config_keys(c)}
    out = []
    for key, value in data.items():
        if key in inner and isinstance(value, Mapping):
            out += [f"{key}.{k}" for k in value if f"{key}.{k}" not in known]
        elif key not in known:
            out.append(key)
    return sorted(k for k in out if k in anyone or any(a.startswith(f"{k}.") for a in anyone))


def model_config(kind: str = DEFAULT_MODEL_TYPE, **fields: Any) -> ModelConfig:
    """The config of model type ``kind`` from its fields (sections as mappings or dataclasses), e.g.
    ``model_config("logreg", rate_prior=5.0)``; a field the type does not read is an error naming it."""
    return model_config_from_dict(to_plain({**fields, "type": kind}))


def retype(config: ModelConfig, kind: str) -> ModelConfig:
    """``config`` as model type ``kind``'s config (what ``model.type=<kind>`` does to a file): the fields
    ``kind`` reads are kept, the others left out, e.g. ``retype(dfgr_config, "dcn")``."""
    return model_config_from_dict(retarget({**to_plain(config), "type": kind}, kind)[0])


def model_config_from_dict(data: Mapping[str, Any], where: str = "model") -> ModelConfig:
    """A ``model:`` mapping built as its type's config; a key the type does not read is an error
    naming the key, the type and the keys it reads."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    kind = model_type_of(data)
    try:
        check_model_type(kind)
    except ValueError as e:
        raise ValueError(f"{where}.{e}") from None
    cls = MODEL_CONFIGS.get(kind, RankingModelConfig)
    unread = unread_keys(kind, data) if kind in MODEL_CONFIGS else []
    if unread:
        reads = ", ".join(k for k in config_keys(cls) if k != "type")
        raise ValueError(
            f"{', '.join(f'{where}.{k}' for k in unread)}: not read by model type {kind!r} "
            f"({cls.__name__} reads {reads})"
        )
    return from_dict(cls, data, where)


def model_type_of(data: Any) -> Any:
    """The type a ``model:`` mapping builds (its ``type``, else the default; the default for no mapping)."""
    return data.get("type", DEFAULT_MODEL_TYPE) if isinstance(data, Mapping) else DEFAULT_MODEL_TYPE


def retarget(data: Mapping[str, Any], kind: Optional[str] = None) -> Tuple[Dict[str, Any], List[str]]:
    """A ``model:`` mapping written for another type (or by an older version, with every type's keys),
    re-targeted at ``kind`` (default: its own ``type``; ``model.type=dcn`` on a DFGR file): the keys
    ``kind`` does not read are left out; returns the mapping and those keys."""
    kind = model_type_of(data) if kind is None else kind
    if kind not in MODEL_CONFIGS:
        return dict(data), []
    dropped, inner = unread_keys(kind, data), sections(MODEL_CONFIGS[kind])
    out: Dict[str, Any] = {}
    for key, value in data.items():
        if key in inner and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if f"{key}.{k}" not in dropped}
        if key not in dropped:
            out[key] = value
    return out, dropped


def fill_from_data(config: ModelConfig, schema: DataSchema) -> ModelConfig:
    """A copy of ``config`` sized for a data set: its tables and its tasks, in the data's order.

    Tasks named in ``config.tasks`` keep their weights; a name the data lacks is an error.
    """
    unknown = sorted(set(config.task_names) - set(schema.tasks))
    if unknown:
        raise ValueError(f"model.tasks: unknown task(s) {unknown}; the data has {schema.tasks}")
    weights = {t.name: t.weight for t in config.tasks}
    embeddings = dataclasses.replace(
        config.embeddings,
        item_vocab_size=schema.item_rows,
        action_vocab_sizes=dict(schema.action_rows),
        item_side_vocab_sizes=dict(schema.side_rows),
        user_vocab_sizes=dict(schema.user_rows),
    )
    tasks = [TaskConfig(name, weights.get(name, 1.0)) for name in schema.tasks]
    return dataclasses.replace(config, embeddings=embeddings, tasks=tasks)


def _positive_int(value: Any, key: str) -> None:
    check(isinstance(value, int) and not isinstance(value, bool) and value > 0, key, "a positive integer", value)


T = TypeVar("T")


def from_dict(cls: Type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Builds a config dataclass from a mapping; unknown keys are errors that name the key."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    prefix = f"{where}." if where else ""
    if unknown:
        raise ValueError(
            f"{', '.join(prefix + k for k in unknown)}: unknown key(s) for {cls.__name__}; "
            f"expected some of: {', '.join(sorted(known))}"
        )
    missing = [k for k in _required(cls) if k not in data]
    if missing:
        raise ValueError(f"{where or cls.__name__}: missing required key(s): {', '.join(missing)}")
    try:
        return cls(**_floats_from_strings(cls, data))
    except ValueError as e:  # messages start with the key path below this node
        raise ValueError(f"{prefix}{e}") from None
    except TypeError as e:  # a mistyped value in a comparison (the YAML loader's type check names those first)
        raise ValueError(f"{where or cls.__name__}: {e}") from None


def _required(cls: type) -> List[str]:
    """The fields of a dataclass without a default, in order."""
    none = dataclasses.MISSING
    return [f.name for f in dataclasses.fields(cls) if f.init and f.default is none and f.default_factory is none]


def to_plain(value: Any) -> Any:
    """A config dataclass (or anything in one) as plain YAML/JSON data: enums as their values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def _floats_from_strings(cls: type, data: Mapping[str, Any]) -> Dict[str, Any]:
    """YAML 1.1 reads ``1e-6`` (no dot) as a string: such values of float fields become floats."""
    import typing

    hints = typing.get_type_hints(cls)
    out = dict(data)
    for key, value in data.items():
        if isinstance(value, str) and hints.get(key) in (float, Optional[float]):
            try:
                out[key] = float(value)
            except ValueError:
                pass  # left to the field's own check, which names the key
    return out


def parse_yaml(text: Any, where: str) -> Any:
    """``yaml.safe_load`` (no tag runs code) with a one-line error naming ``where`` and the line."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if isinstance(e, yaml.constructor.ConstructorError):  # e.g. !!python/object: never built
            raise ValueError(f"{where}: {line}refused: {problem} (configs hold plain data only)") from None
        raise ValueError(f"{where}: {line}not valid YAML ({problem})") from None
