"""Typed, validated parameters, loaded from ``params.yaml``.

Every section of ``params.yaml`` maps onto a frozen dataclass below. :func:`load` checks the
whole file before any work starts: an unknown key, a wrong type, an out-of-range value or an
unknown name raises one :class:`ParamsError` that names the key path (``train.ctr.lr``), the
value and what is accepted. Stages read attributes (``p.train.ctr.lr``), never dict keys.

Bounds are declared next to each field with :func:`bounded`; choices with ``Literal``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from recdistill.errors import UserError

__all__ = ["ParamsError", "Params", "load", "parse", "section_dict"]


class ParamsError(UserError, ValueError):
    """A value in params.yaml is missing, unknown, of the wrong type or out of range."""


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None) -> Any:
    """A dataclass field with a default and inclusive/exclusive numeric bounds."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- runtime and tracking
@dataclass(frozen=True)
class RuntimeParams:
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast dtype on cuda; ignored on cpu
    threads: int = bounded(0, ge=0)  # torch CPU threads; 0 keeps torch's default


@dataclass(frozen=True)
class TrackingParams:
    experiment: str = "recdistill"


# ---------------------------------------------------------------- download
@dataclass(frozen=True)
class Source:
    name: str
    kind: Literal["zip", "pip-wheel", "file"]  # zip: GroupLens archive URL; pip-wheel: a pip requirement; file: a local path
    url: str
    sha256: str


@dataclass(frozen=True)
class Expect:
    ratings: int = bounded(100_000, ge=1)
    users: int = bounded(943, ge=1)
    items: int = bounded(1682, ge=1)


@dataclass(frozen=True)
class DownloadParams:
    sources: tuple[Source, ...]
    timeout_s: float = bounded(60.0, gt=0)
    expect: Expect = field(default_factory=Expect)


# ---------------------------------------------------------------- data (prepare)
@dataclass(frozen=True)
class Fractions:
    train: float = bounded(0.8, gt=0, lt=1)
    valid: float = bounded(0.1, gt=0, lt=1)
    test: float = bounded(0.1, gt=0, lt=1)


@dataclass(frozen=True)
class ColdstartSplitParams:
    warm: Fractions = field(default_factory=Fractions)
    cold_valid: float = bounded(0.1, gt=0, lt=0.5)
    cold_test: float = bounded(0.1, gt=0, lt=0.5)


@dataclass(frozen=True)
class CtrSplitParams:
    split: Fractions = field(default_factory=Fractions)
    positive_min_rating: int = bounded(4, ge=2, le=5)
    neutral: Literal["drop", "negative"] = "drop"


@dataclass(frozen=True)
class CfSplitParams:
    min_rating: int = bounded(1, ge=1, le=5)
    split: Fractions = field(default_factory=Fractions)


@dataclass(frozen=True)
class SeqSplitParams:
    min_length: int = bounded(5, ge=3)


@dataclass(frozen=True)
class DataParams:
    seed: int = bounded(20241124, ge=0)
    coldstart: ColdstartSplitParams = field(default_factory=ColdstartSplitParams)
    ctr: CtrSplitParams = field(default_factory=CtrSplitParams)
    cf: CfSplitParams = field(default_factory=CfSplitParams)
    seq: SeqSplitParams = field(default_factory=SeqSplitParams)


# ---------------------------------------------------------------- coldstart
Scenario = Literal["warm", "ics", "ucs"]


@dataclass(frozen=True)
class NeighborParams:
    scenarios: tuple[Scenario, ...] = ("warm", "ics", "ucs")
    top_frac: float = bounded(0.05, gt=0, le=1)  # neighbours kept per node / node count
    preference_weight: float = bounded(1.0, ge=0)
    attribute_weight: float = bounded(1.0, ge=0)
    block_size: int = bounded(1024, ge=1)
    min_attribute_count: int = bounded(2, ge=1)  # attribute values held by fewer nodes are dropped
    temperature: float = bounded(1.0, gt=0)  # softmax temperature of the sampling weights


@dataclass(frozen=True)
class BaselineParams:
    bias_reg: float = bounded(10.0, ge=0)
    bias_iters: int = bounded(10, ge=1)


@dataclass(frozen=True)
class AgnnParams:
    embed_dim: int = bounded(30, ge=1)
    n_neighbors: int = bounded(10, ge=1)  # sampled per node and batch from its k-NN list
    hidden_dim: int = bounded(30, ge=1)  # prediction MLP hidden width
    min_warm_holders: int = bounded(1, ge=1)  # attribute values on fewer warm nodes are not embedded
    vae_weight: float = bounded(0.01, ge=0)  # eVAE terms vs the per-rating mean squared error
    lr: float = bounded(8e-3, gt=0)
    weight_decay: float = bounded(3e-4, ge=0)
    batch_size: int = bounded(4096, ge=1)
    epochs: int = bounded(30, ge=1)
    patience: int = bounded(5, ge=1)


# ---------------------------------------------------------------- ctr
@dataclass(frozen=True)
class CtrTeacherParams:
    teacher: Literal["crossnet", "cin"] = "crossnet"
    cross: Literal["matrix", "vector"] = "matrix"  # crossnet layers: DCN-V2 matrix W or DCN vector w
    embed_dim: int = bounded(16, ge=1)
    depth: int = bounded(3, ge=1)
    cin_layer_size: int = bounded(16, ge=1)
    mlp_dims: tuple[int, ...] = bounded((), ge=1)
    lr: float = bounded(3e-3, gt=0)
    weight_decay: float = bounded(0.0, ge=0)
    batch_size: int = bounded(1024, ge=1)
    epochs: int = bounded(30, ge=1)
    patience: int = bounded(3, ge=1)


@dataclass(frozen=True)
class DagfmParams:
    type: Literal["outer", "inner"] = "outer"
    depth: int = bounded(3, ge=1)
    lr: float = bounded(3e-3, gt=0)
    weight_decay: float = bounded(0.0, ge=0)
    batch_size: int = bounded(1024, ge=1)
    epochs: int = bounded(30, ge=1)
    patience: int = bounded(3, ge=1)


@dataclass(frozen=True)
class CtrDistillParams:
    student: DagfmParams = field(default_factory=DagfmParams)
    alpha: float = bounded(0.1, ge=0)
    beta: float = bounded(921.6, ge=0)


# ---------------------------------------------------------------- cf
@dataclass(frozen=True)
class LightGcnParams:
    embed_dim: int = bounded(64, ge=1)
    n_layers: int = bounded(3, ge=1)  # propagation layers K
    lr: float = bounded(5e-2, gt=0)  # Adam
    weight_decay: float = bounded(1e-3, ge=0)  # L2 on the batch's layer-0 embeddings / (2B)
    batch_size: int = bounded(32768, ge=1)  # a step propagates the whole graph: few, large batches
    epochs: int = bounded(120, ge=1)
    patience: int = bounded(3, ge=1)  # evaluations without a valid NDCG@20 gain
    eval_every: int = bounded(5, ge=1)


@dataclass(frozen=True)
class MfParams:
    embed_dim: int = bounded(64, ge=1)  # must equal train.cf.embed_dim for cross fusion
    lr: float = bounded(5e-3, gt=0)  # Adam
    weight_decay: float = bounded(2e-2, ge=0)  # L2 on the batch's embeddings / (2B)
    batch_size: int = bounded(2048, ge=1)
    epochs: int = bounded(150, ge=1)
    patience: int = bounded(3, ge=1)  # evaluations without a valid NDCG@20 gain
    eval_every: int = bounded(5, ge=1)


@dataclass(frozen=True)
class CfDistillParams:
    student: MfParams = field(default_factory=MfParams)
    lambda1: float = bounded(0.3, ge=0)  # MSE(<E_u, H_i>, <E_u, E_i>): meta user x main item
    lambda2: float = bounded(0.3, ge=0)  # MSE(<H_u, E_i>, <E_u, E_i>): main user x meta item


# ---------------------------------------------------------------- seq
@dataclass(frozen=True)
class SasrecParams:
    hidden_dim: int = bounded(64, ge=1)
    n_blocks: int = bounded(2, ge=1)
    n_heads: int = bounded(1, ge=1)
    dropout: float = bounded(0.2, ge=0, lt=1)
    lr: float = bounded(1e-3, gt=0)
    batch_size: int = bounded(128, ge=1)
    epochs: int = bounded(200, ge=1)
    patience: int = bounded(5, ge=1)
    eval_every: int = bounded(5, ge=1)


@dataclass(frozen=True)
class SeqTeacherParams(SasrecParams):
    max_len: int = bounded(200, ge=2)


@dataclass(frozen=True)
class SeqDistillParams:
    student: SasrecParams = field(default_factory=lambda: SasrecParams(hidden_dim=32, n_blocks=1))
    temperature: float = bounded(2.0, gt=0)
    kd_weight: float = bounded(0.5, ge=0, le=1)
    candidates: Literal["all", "sampled"] = "sampled"  # items the soft targets cover at each position
    n_candidates: int = bounded(200, ge=1)  # sampled: uniform items shared by a batch's positions
    teacher_top: int = bounded(50, ge=0)  # sampled: plus the teacher's top items at each position


# ---------------------------------------------------------------- sections
@dataclass(frozen=True)
class TrainParams:
    agnn: AgnnParams = field(default_factory=AgnnParams)
    ctr: CtrTeacherParams = field(default_factory=CtrTeacherParams)
    cf: LightGcnParams = field(default_factory=LightGcnParams)
    seq: SeqTeacherParams = field(default_factory=SeqTeacherParams)


@dataclass(frozen=True)
class DistillParams:
    ctr: CtrDistillParams = field(default_factory=CtrDistillParams)
    cf: CfDistillParams = field(default_factory=CfDistillParams)
    seq: SeqDistillParams = field(default_factory=SeqDistillParams)


@dataclass(frozen=True)
class EvaluateParams:
    ks: tuple[int, ...] = bounded((10, 20), ge=1)
    sampled_negatives: int = bounded(100, ge=1)
    tolerance: float = bounded(1e-4, gt=0)


@dataclass(frozen=True)
class Params:
    download: DownloadParams
    seeds: tuple[int, ...] = bounded((0, 1, 2), ge=0)
    runtime: RuntimeParams = field(default_factory=RuntimeParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)
    data: DataParams = field(default_factory=DataParams)
    neighbors: NeighborParams = field(default_factory=NeighborParams)
    baselines: BaselineParams = field(default_factory=BaselineParams)
    train: TrainParams = field(default_factory=TrainParams)
    distill: DistillParams = field(default_factory=DistillParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)


# ---------------------------------------------------------------- parsing
T = TypeVar("T")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp))


def _fail(path: str, value: Any, expected: str) -> typing.NoReturn:
    raise ParamsError(f"params.yaml: {path} = {value!r} is invalid: expected {expected}")


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is Literal:
        if value not in typing.get_args(tp):
            _fail(path, value, _describe(tp))
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            _fail(path, value, _describe(tp))
        item_tp = typing.get_args(tp)[0]
        return tuple(_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unions are not supported in params ({path})")
    if tp is bool:
        if not isinstance(value, bool):
            _fail(path, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(path, value, "a number")
        try:
            number = float(value)
        except OverflowError:
            _fail(path, value, "a finite number")
        if not math.isfinite(number):
            _fail(path, value, "a finite number")
        return number
    if tp is str:
        if not isinstance(value, str):
            _fail(path, value, "a string")
        return value
    raise TypeError(f"unsupported params type {tp!r} at {path}")


def _check_bounds(f: dataclasses.Field[Any], value: Any, path: str) -> None:
    meta = f.metadata
    checks = (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
              ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<"))
    values = value if isinstance(value, tuple) else (value,)
    for key, ok, sign in checks:
        if key in meta and not all(ok(v, meta[key]) for v in values):
            bounds = " and ".join(f"{s} {meta[k]}" for k, _, s in checks if k in meta)
            _fail(path, value, f"a value {bounds}")


def _build(cls: type[T], raw: Any, path: str) -> T:
    if not isinstance(raw, dict):
        _fail(path or "<top level>", raw, _describe(cls))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ParamsError(f"params.yaml: unknown key {key!r}; accepted keys here: "
                          + ", ".join(sorted(fields)))
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ParamsError(f"params.yaml: missing required key {key!r} "
                                  f"(expected {_describe(hints[name])})")
            continue
        value = _convert(hints[name], raw[name], key)
        _check_bounds(f, value, key)
        kwargs[name] = value
    return cls(**kwargs)


def _check_fractions(fr: Fractions, path: str) -> None:
    total = fr.train + fr.valid + fr.test
    if abs(total - 1.0) > 1e-9:
        _fail(path, dataclasses.asdict(fr), f"train + valid + test = 1 (they sum to {total:g})")


def _validate(p: Params) -> None:
    """Checks that span several fields."""
    _check_fractions(p.data.coldstart.warm, "data.coldstart.warm")
    _check_fractions(p.data.ctr.split, "data.ctr.split")
    _check_fractions(p.data.cf.split, "data.cf.split")
    if not p.seeds:
        _fail("seeds", list(p.seeds), "at least one seed")
    if len(set(p.seeds)) != len(p.seeds):
        _fail("seeds", list(p.seeds), "distinct seeds")
    if not p.download.sources:
        _fail("download.sources", [], "at least one source")
    if not p.evaluate.ks or len(set(p.evaluate.ks)) != len(p.evaluate.ks):
        _fail("evaluate.ks", list(p.evaluate.ks), "a non-empty list of distinct cut-offs")
    if not p.neighbors.scenarios:
        _fail("neighbors.scenarios", [], "at least one scenario")
    if not p.tracking.experiment.strip():
        _fail("tracking.experiment", p.tracking.experiment, "a non-empty experiment name")
    if p.distill.cf.student.embed_dim != p.train.cf.embed_dim:
        _fail("distill.cf.student.embed_dim", p.distill.cf.student.embed_dim,
              f"the meta model's train.cf.embed_dim ({p.train.cf.embed_dim}): cross fusion "
              "takes dot products between the two models' embeddings")
    if len(set(p.neighbors.scenarios)) != len(p.neighbors.scenarios):
        _fail("neighbors.scenarios", list(p.neighbors.scenarios), "distinct scenarios")
    for i, src in enumerate(p.download.sources):
        digest = src.sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            _fail(f"download.sources[{i}].sha256", src.sha256, "64 hexadecimal digits")
    cs = p.data.coldstart
    if cs.cold_valid + cs.cold_test >= 1:
        _fail("data.coldstart.cold_test", cs.cold_test, "cold_valid + cold_test < 1")
    if p.train.seq.n_blocks and p.train.seq.hidden_dim % p.train.seq.n_heads:
        _fail("train.seq.n_heads", p.train.seq.n_heads, "a divisor of train.seq.hidden_dim")
    st = p.distill.seq.student
    if st.hidden_dim % st.n_heads:
        _fail("distill.seq.student.n_heads", st.n_heads, "a divisor of distill.seq.student.hidden_dim")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice (the last would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse(raw: Any) -> Params:
    """Validate an already-parsed mapping (the content of params.yaml)."""
    params = _build(Params, raw, "")
    _validate(params)
    return params


def load(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; raise :class:`ParamsError` naming the bad key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file; run stages from the repository root") from None
    except (UnicodeDecodeError, OSError) as err:
        raise ParamsError(f"{path}: cannot read it as UTF-8 text ({err})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader that refuses duplicate keys
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    try:
        return parse(raw)
    except ParamsError as err:  # name the file that was read, not params.yaml
        raise ParamsError(f"{path}: {str(err).removeprefix('params.yaml: ')}") from None


def section_dict(section: Any) -> dict[str, Any]:
    """A params dataclass as a plain dict (tuples as lists), for hashing and logging."""
    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(section))
