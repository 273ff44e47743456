"""Typed, validated parameters, loaded from ``params.yaml`` (the one place defaults live).

Every section of ``params.yaml`` maps onto a frozen pydantic model below, with no defaults:
a key missing from the file is an error, not a silent fallback. :func:`load` checks the whole
file before any work starts: an unknown key, a wrong type or an out-of-range value raises
one :class:`ParamsError` that names the file, the key path (``train.ctr.optim.lr``), the
value and what is accepted; the keys of a ``model:`` block (and an unknown model name) are
checked the same way by the track's registry, which each stage calls right after. Stages read attributes
(``p.train.ctr.optim.lr``), never dict keys.

Each trained model has an architecture block (``model:``, picked by its ``name`` from the
track's registry, :mod:`recdistill.models.registry`, which validates the rest of the block)
and an optimisation block (``optim:``). Sizes a student must share with its teacher are not
repeated here: the distilled student reads them from the teacher's checkpoint.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from recdistill.errors import UserError

__all__ = ["ParamsError", "Params", "Frozen", "ModelBlock", "Number", "Seq", "load", "parse",
           "describe_error", "section_dict", "audit", "AUDIT_ENV"]
AUDIT_ENV = "RECDISTILL_PARAMS_AUDIT"  # a folder: record which keys this process reads (tests)


class ParamsError(UserError, ValueError):
    """A value in params.yaml is missing, unknown, of the wrong type or out of range."""


class _Audit:
    """Which params keys a stage reads, for the test that keeps ``dvc.yaml`` params exact.

    Started by :func:`audit`; each block knows its key path, a read of a leaf value records
    ``path.leaf`` and :func:`section_dict` of a block records the block's path. At exit the
    keys and the command line go to ``$RECDISTILL_PARAMS_AUDIT/<pid>.json``.
    """

    def __init__(self) -> None:
        self.paths: dict[int, str] = {}
        self.read: set[str] = set()

    def watch(self, value: Any, path: str) -> None:
        if isinstance(value, BaseModel):
            self.paths[id(value)] = path
            for name in type(value).model_fields:
                self.watch(value.__dict__[name], f"{path}.{name}" if path else name)
        elif isinstance(value, tuple):
            for item in value:  # download.sources[i]: recorded as download.sources
                self.watch(item, path)

    def record(self, owner: BaseModel, name: str, value: Any) -> None:
        path = self.paths.get(id(owner))
        if path is not None and not isinstance(value, BaseModel) and not (
                isinstance(value, tuple) and value and isinstance(value[0], BaseModel)):
            self.read.add(f"{path}.{name}" if path else name)

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{os.getpid()}.json").write_text(json.dumps(
            {"argv": sys.argv, "keys": sorted(self.read)}))


_AUDIT: _Audit | None = None


class _Audited(BaseModel):
    """Reports leaf reads to the audit when one runs (a no-op otherwise)."""

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if _AUDIT is not None and name in type(self).model_fields:
            _AUDIT.record(self, name, value)
        return value


class Frozen(_Audited):
    """Base of every params block: immutable, strict about unknown keys and about types."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def _number(value: Any) -> float:
    """A YAML number (int or float, not bool, not a string) as a finite float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("number", "a number")
    try:
        number = float(value)
    except OverflowError:
        raise PydanticCustomError("finite_number", "a finite number") from None
    if not math.isfinite(number):
        raise PydanticCustomError("finite_number", "a finite number")
    return number


Number = Annotated[float, BeforeValidator(_number)]
Positive = Annotated[Number, Field(gt=0)]
NonNegative = Annotated[Number, Field(ge=0)]
Count = Annotated[int, Field(ge=1)]
Fraction = Annotated[Number, Field(gt=0, lt=1)]


def _threads(value: Any) -> Any:
    """``runtime.threads``: ``auto`` or a count >= 0 (not a bool), checked before the union so
    that an error names what is accepted and not one branch of it."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise PydanticCustomError("threads", "'auto' or an integer >= 0")


Threads = Annotated[int | Literal["auto"], BeforeValidator(_threads)]


def _list(value: Any) -> Any:
    """YAML gives lists; the params hold tuples (hashable, immutable)."""
    return tuple(value) if isinstance(value, list) else value


Seq = BeforeValidator(_list)


# ---------------------------------------------------------------- shared blocks
class ModelBlock(_Audited):
    """An architecture block: ``name`` picks the model in the track's registry, which
    validates the other keys (:meth:`recdistill.models.registry.Registry.arch`)."""

    model_config = ConfigDict(frozen=True, extra="allow", strict=True)
    name: str


class Optim(Frozen):
    """How one model is optimised (Adam): the fields every track shares."""

    lr: Positive
    weight_decay: NonNegative
    batch_size: Count
    epochs: Count
    patience: Count  # validations without improvement of the early-stopping metric


class PeriodicOptim(Optim):
    """Optimisation of a model that is validated every ``eval_every`` epochs."""

    eval_every: Count


# ---------------------------------------------------------------- runtime and tracking
class RuntimeParams(Frozen):
    device: Literal["auto", "cpu", "cuda"]  # auto: cuda when available
    amp: Literal["none", "bf16", "fp16"]  # autocast dtype of the training forward on cuda; ignored on cpu
    threads: Threads  # torch CPU threads; 0 keeps torch's default; auto: see recdistill.train.threads


class TrackingParams(Frozen):
    experiment: Annotated[str, Field(pattern=r"\S")]


# ---------------------------------------------------------------- download
class Source(Frozen):
    name: str
    kind: Literal["zip", "pip-wheel", "file"]  # zip: archive URL; pip-wheel: a pip requirement; file: a local path
    url: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]


class Expect(Frozen):
    ratings: Count
    users: Count
    items: Count


class DownloadParams(Frozen):
    sources: Annotated[tuple[Source, ...], Seq, Field(min_length=1)]
    timeout_s: Positive
    expect: Expect


# ---------------------------------------------------------------- data (prepare)
class Fractions(Frozen):
    train: Fraction
    valid: Fraction
    test: Fraction


class ColdstartSplitParams(Frozen):
    warm: Fractions
    cold_valid: Annotated[Number, Field(gt=0, lt=0.5)]
    cold_test: Annotated[Number, Field(gt=0, lt=0.5)]


class CtrSplitParams(Frozen):
    split: Fractions
    positive_min_rating: Annotated[int, Field(ge=2, le=5)]
    neutral: Literal["drop", "negative"]


class CfSplitParams(Frozen):
    min_rating: Annotated[int, Field(ge=1, le=5)]
    split: Fractions


class SeqSplitParams(Frozen):
    min_length: Annotated[int, Field(ge=3)]  # users with fewer interactions are dropped (prepare)
    max_len: Annotated[int, Field(ge=2)]  # the input window every seq model sees (training)


class DataParams(Frozen):
    seed: Annotated[int, Field(ge=0)]
    coldstart: ColdstartSplitParams
    ctr: CtrSplitParams
    cf: CfSplitParams
    seq: SeqSplitParams


# ---------------------------------------------------------------- coldstart
Scenario = Literal["warm", "ics", "ucs"]


class NeighborParams(Frozen):
    scenarios: Annotated[tuple[Scenario, ...], Seq, Field(min_length=1)]
    top_frac: Annotated[Number, Field(gt=0, le=1)]  # neighbours kept per node / node count
    preference_weight: NonNegative
    attribute_weight: NonNegative
    block_size: Count
    min_attribute_count: Count  # attribute values held by fewer nodes are dropped
    temperature: Positive  # softmax temperature of the sampling weights


class BaselineParams(Frozen):
    bias_reg: NonNegative
    bias_iters: Count


class AgnnParams(Frozen):
    model: ModelBlock
    optim: Optim
    vae_weight: NonNegative  # eVAE terms vs the per-rating mean squared error


# ---------------------------------------------------------------- ctr
class CtrTeacherParams(Frozen):
    embed_dim: Count  # the field embeddings' width, shared by the teacher and its students
    model: ModelBlock
    optim: Optim


class StudentParams(Frozen):
    model: ModelBlock
    optim: Optim


class PeriodicStudentParams(Frozen):
    model: ModelBlock
    optim: PeriodicOptim


class CtrDistillParams(Frozen):
    student: StudentParams  # ctr-alone trains the same architecture and budget
    alpha: NonNegative  # weight of BCE during distillation
    beta: NonNegative  # weight of the logit MSE during distillation


# ---------------------------------------------------------------- cf
class CfMetaParams(Frozen):
    embed_dim: Count  # the embeddings' width, shared by the meta and main models
    model: ModelBlock
    optim: PeriodicOptim


class CfDistillParams(Frozen):
    student: PeriodicStudentParams
    lambda1: NonNegative  # MSE(<E_u, H_i>, <E_u, E_i>): meta user x main item
    lambda2: NonNegative  # MSE(<H_u, E_i>, <E_u, E_i>): main user x meta item


# ---------------------------------------------------------------- seq
SeqLoss = Literal["bce", "ce"]  # SASRec's BCE with one sampled negative | softmax CE over all items


class SeqTeacherParams(Frozen):
    model: ModelBlock
    loss: SeqLoss
    optim: PeriodicOptim


class SeqDistillParams(Frozen):
    student: PeriodicStudentParams
    loss: SeqLoss  # the student's hard loss, distilled and alone alike
    temperature: Positive
    kd_weight: Annotated[Number, Field(ge=0, le=1)]
    candidates: Literal["all", "sampled"]  # items the soft targets cover at each position
    n_candidates: Count  # sampled: uniform items shared by a batch's positions
    teacher_top: Annotated[int, Field(ge=0)]  # sampled: plus the teacher's top items at each position


# ---------------------------------------------------------------- sections
class TrainParams(Frozen):
    agnn: AgnnParams
    ctr: CtrTeacherParams
    cf: CfMetaParams
    seq: SeqTeacherParams


class DistillParams(Frozen):
    ctr: CtrDistillParams
    cf: CfDistillParams
    seq: SeqDistillParams


MetricName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*(@[0-9]+)?$")]


class SelectParams(Frozen):
    """The validation metric each track stops early on and keeps its best epoch by."""

    coldstart: MetricName
    ctr: MetricName
    cf: MetricName
    seq: MetricName


class BootstrapParams(Frozen):
    """The paired bootstrap of each gain's main metric (:mod:`recdistill.report.bootstrap`)."""

    resamples: Count  # draws of the test units with replacement
    seed: Annotated[int, Field(ge=0)]
    level: Fraction  # of the percentile interval, e.g. 0.95


class EvaluateParams(Frozen):
    ks: Annotated[tuple[Count, ...], Seq, Field(min_length=1)]
    select: SelectParams
    sampled_negatives: Count  # the labelled sampled-ranking variant: sampled<n>_hr@k
    tolerance: Positive  # recomputed vs reported test metric
    bootstrap: BootstrapParams

    @property
    def sampled_label(self) -> str:
        """The prefix of the sampled-ranking metrics, e.g. ``sampled100``."""
        return f"sampled{self.sampled_negatives}"


class Params(Frozen):
    seeds: Annotated[tuple[Annotated[int, Field(ge=0)], ...], Seq, Field(min_length=1)]
    runtime: RuntimeParams
    tracking: TrackingParams
    download: DownloadParams
    data: DataParams
    neighbors: NeighborParams
    baselines: BaselineParams
    train: TrainParams
    distill: DistillParams
    evaluate: EvaluateParams


# ---------------------------------------------------------------- errors
def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _node(cls: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The params model at ``loc`` below ``cls`` (None when the path leaves the models)."""
    node: Any = cls
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or part not in node.model_fields:
            return None
        node = node.model_fields[part].annotation
        while typing.get_origin(node) is tuple:
            node = typing.get_args(node)[0]
        while typing.get_origin(node) is Annotated:
            node = typing.get_args(node)[0]
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _expected(error: ErrorDetails, root: type[BaseModel], loc: Sequence[int | str]) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(ctx.values()))
        return f"a value {bounds[kind]} {bound}"
    if kind == "literal_error":
        return "one of " + str(ctx.get("expected", "")).replace(" or ", ", ")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        node = _node(root, loc)
        keys = ", ".join(node.model_fields) if node else "name and its settings"
        return f"a mapping with keys {keys}"
    if kind in ("tuple_type", "list_type"):
        return "a list"
    if kind == "too_short":
        return "at least one entry"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return ("64 hexadecimal digits" if "{64}" in pattern else
                "a non-empty string" if pattern == r"\S" else f"a string matching {pattern}")
    simple = {"int_type": "an integer", "int_from_float": "an integer", "string_type": "a string",
              "bool_type": "true or false", "number": "a number", "finite_number": "a finite number"}
    return simple.get(kind, error["msg"])


def describe_error(err: ValidationError, root: type[BaseModel], prefix: Sequence[int | str] = ()) -> str:
    """The first error of ``err`` as one line: the key path, the value, what is accepted."""
    error = err.errors(include_url=False)[0]
    loc = list(error["loc"])  # below root
    path = _path([*prefix, *loc]) or "<top level>"
    if error["type"] == "extra_forbidden":
        node = _node(root, loc[:-1])
        accepted = ", ".join(sorted(node.model_fields)) if node else "see params.yaml"
        return f"unknown key {path!r}; accepted keys here: {accepted}"
    if error["type"] == "missing":
        return f"missing required key {path!r}"
    return f"{path} = {error['input']!r} is invalid: expected {_expected(error, root, loc)}"


def _fail(path: str, value: Any, expected: str) -> ParamsError:
    return ParamsError(f"params.yaml: {path} = {value!r} is invalid: expected {expected}")


def _check_fractions(fr: Fractions, path: str) -> None:
    total = fr.train + fr.valid + fr.test
    if abs(total - 1.0) > 1e-9:
        raise _fail(path, fr.model_dump(), f"train + valid + test = 1 (they sum to {total:g})")


def _validate(p: Params) -> None:
    """Checks that span several fields."""
    _check_fractions(p.data.coldstart.warm, "data.coldstart.warm")
    _check_fractions(p.data.ctr.split, "data.ctr.split")
    _check_fractions(p.data.cf.split, "data.cf.split")
    for key, values in (("seeds", p.seeds), ("evaluate.ks", p.evaluate.ks),
                        ("neighbors.scenarios", p.neighbors.scenarios)):
        if len(set(values)) != len(values):
            raise _fail(key, list(values), "distinct values")


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
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"params.yaml: {describe_error(err, Params)}") from None
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


def section_dict(section: BaseModel) -> dict[str, Any]:
    """A params block as plain JSON types (tuples as lists); the whole block counts as read."""
    if _AUDIT is not None and id(section) in _AUDIT.paths:
        _AUDIT.read.add(_AUDIT.paths[id(section)])
    return section.model_dump(mode="json")


def audit(p: Params) -> None:
    """Record the keys of ``p`` read from now on when ``$RECDISTILL_PARAMS_AUDIT`` names a
    folder (the dvc.yaml params test sets it); otherwise do nothing."""
    global _AUDIT
    folder = os.environ.get(AUDIT_ENV)
    if not folder or _AUDIT is not None:
        return
    _AUDIT = _Audit()
    _AUDIT.watch(p, "")
    atexit.register(_AUDIT.write, Path(folder))
