"""Configuration dataclasses for the DFGR / MetaGR modules.

Every field is typed and validated in ``__post_init__`` so a bad value fails where it is set,
with the field's name in the message.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Type, TypeVar

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
BIAS_TERM_MODELS = ("dfgr", "metagr")  # the types that read ``model.bias_terms`` (and ``model.rate_terms``)
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
class RankingModelConfig:
    """A full ranking model: its registered type, embeddings, interaction stack and multi-task heads.

    The same dataclass is the ``model:`` node of a training YAML, where what the data decides
    (table sizes, the task list) is left out and filled by :func:`fill_from_data`; there
    ``tasks`` may list some tasks by name to weight them (the others weigh 1).

    ``d_model`` of the interaction must equal ``embedding_dim`` when ``merge="sum"``;
    with ``merge="concat"`` a linear layer maps to ``d_model``.

    Example::

        config = RankingModelConfig(
            embeddings=SequenceEmbeddingConfig(item_vocab_size=10_000, embedding_dim=64),
            tasks=[TaskConfig("like"), TaskConfig("follow", weight=0.5)],
        )
    """

    type: str = "dfgr"
    embeddings: SequenceEmbeddingConfig = field(default_factory=SequenceEmbeddingConfig)
    interaction: InteractionConfig = field(default_factory=InteractionConfig)
    tasks: List[TaskConfig] = field(default_factory=list)
    head_hidden_dims: List[int] = field(default_factory=lambda: [64])
    bias_terms: bool = False  # dfgr / metagr: add per-task item, side-feature and user biases to the logits
    # dfgr / metagr: add logreg's per-task rate features (smoothed item and user rates, log counts)
    # through a learned per-task linear term to the logits (models/rates.py; export refuses it)
    rate_terms: bool = False
    rate_prior: float = 10.0  # logreg, rate_terms: pseudo-rows of the global rate in the smoothed item and user rates
    num_targets: Optional[int] = None  # hstu: training targets per window (None: Meta's 8)

    def __post_init__(self) -> None:
        prior = self.rate_prior
        check(
            isinstance(prior, (int, float)) and not isinstance(prior, bool) and prior > 0,
            "rate_prior",
            "a number > 0",
            prior,
        )
        targets = self.num_targets
        check(
            targets is None or (isinstance(targets, int) and not isinstance(targets, bool) and targets > 0),
            "num_targets",
            "a positive integer or null",
            targets,
        )
        check(
            targets is None or self.type == "hstu",
            "num_targets",
            f"null for model type {self.type!r} (hstu's)",
            targets,
        )
        for name in ("bias_terms", "rate_terms"):
            value = getattr(self, name)
            check(isinstance(value, bool), name, "true or false", value)
            check(
                not value or self.type in BIAS_TERM_MODELS,
                name,
                f"false for model type {self.type!r} (only {', '.join(BIAS_TERM_MODELS)} add {name.replace('_', ' ')})",
                value,
            )
        if isinstance(self.embeddings, Mapping):
            self.embeddings = from_dict(SequenceEmbeddingConfig, self.embeddings, "embeddings")
        if isinstance(self.interaction, Mapping):
            self.interaction = from_dict(InteractionConfig, self.interaction, "interaction")
        self.tasks = [
            from_dict(TaskConfig, t, f"tasks[{i}]") if isinstance(t, Mapping) else t for i, t in enumerate(self.tasks)
        ]
        check(isinstance(self.type, str) and self.type != "", "type", "a registered model type", self.type)
        check(
            not self.embeddings.repeat_feature or self.type in REPEAT_FEATURE_MODELS,
            "embeddings.repeat_feature",
            f"false for model type {self.type!r} (only {', '.join(REPEAT_FEATURE_MODELS)} read it)",
            True,
        )
        names = [t.name for t in self.tasks]
        check(len(set(names)) == len(names), "tasks", "unique task names", names)
        for i, h in enumerate(self.head_hidden_dims):
            check(isinstance(h, int) and h > 0, f"head_hidden_dims[{i}]", "a positive integer", h)
        if self.embeddings.merge == MergeOp.SUM:
            check(
                self.embeddings.embedding_dim == self.interaction.d_model,
                "interaction.d_model",
                f"embedding_dim ({self.embeddings.embedding_dim}) when merge is 'sum'",
                self.interaction.d_model,
            )

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


def fill_from_data(config: RankingModelConfig, schema: DataSchema) -> RankingModelConfig:
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
