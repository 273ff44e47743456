"""Bad params.yaml cases, generated from the pydantic models of ``recdistill.params``.

For every mapping node: an unknown key. For every field: a value of the wrong type (and a
non-mapping for a section); for every bounded number: a value just outside each bound (and
NaN); for every ``Literal``: a name that is not accepted; for lists: a non-list and a bad
element. Cross-field rules (fractions summing to 1, distinct seeds, ...) are listed by hand.
Each case names the key path the error must mention. Run this file to print the counts::

    .venv/bin/python tests/reliability/paramcases.py
"""

from __future__ import annotations

import types
import typing
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from recdistill import params

BOGUS = "no_such_key"


@dataclass(frozen=True)
class Case:
    path: str  # where the bad value goes ("" = the whole file)
    value: Any  # the bad value; DELETE removes the key instead
    kind: Literal["unknown", "type", "range", "choice", "missing", "cross"]
    named: str  # what the ParamsError message must contain (the key path)

    @property
    def section(self) -> str:
        head = self.path.split(".")[0].split("[")[0]
        return "<file>" if head in ("", BOGUS) else head

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.path or '<file>'}={self.value!r}"[:90]


DELETE = object()  # sentinel: remove the key


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """The bare type and the metadata (bounds) of a possibly ``Annotated`` type."""
    meta: list[Any] = []
    while typing.get_origin(tp) is Annotated:
        tp, *extra = typing.get_args(tp)
        meta += extra
    return tp, meta


def _bounds(meta: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in meta:
        items = m.metadata if isinstance(m, FieldInfo) else [m]
        for item in items:
            for key, cls in (("ge", annotated_types.Ge), ("gt", annotated_types.Gt),
                             ("le", annotated_types.Le), ("lt", annotated_types.Lt)):
                if isinstance(item, cls):
                    out[key] = getattr(item, key)
    return out


def _wrong_types(tp: Any) -> list[Any]:
    """Values of another type than ``tp`` (YAML can produce each of them)."""
    origin = typing.get_origin(tp)
    if _is_model(tp):
        return [7, "a string", ["a", "list"]]
    if origin is Literal:
        return [12345, ["a", "list"], None]
    if origin is tuple:
        return ["not a list", 3, {"a": "mapping"}]
    if origin in (typing.Union, types.UnionType):  # runtime.threads: an int or "auto"
        return ["no-such-choice", 2.5, True, None, [1], -1]
    if tp is bool:
        return ["yes", 1, None]
    if tp is int:
        return ["3", 2.5, True, None, [1]]
    if tp is float:
        return ["0.5", True, None, [0.5]]
    if tp is str:
        return [123, ["a"], {"k": "v"}, None]
    raise TypeError(f"no wrong-type values for {tp!r}")


def _out_of_range(tp: Any, bounds: dict[str, Any]) -> list[Any]:
    """Values just outside each bound (and NaN for floats)."""
    out: list[Any] = []
    step = 1 if tp is int else 0.5
    if "ge" in bounds:
        out.append(bounds["ge"] - step)
    if "gt" in bounds:
        out.append(bounds["gt"])
    if "le" in bounds:
        out.append(bounds["le"] + step)
    if "lt" in bounds:
        out.append(bounds["lt"])
    if tp is int:
        out = [int(v) for v in out]
    elif out:
        out.append(float("nan"))  # every comparison with NaN is false
    return out


def _field_cases(annotation: Any, meta: list[Any], key: str) -> list[Case]:
    tp, more = _unwrap(annotation)
    bounds = _bounds(meta + more)
    cases = [Case(key, v, "type", key) for v in _wrong_types(tp)]
    origin = typing.get_origin(tp)
    if _is_model(tp):
        cases += _node_cases(tp, key)
    elif origin is Literal:
        cases.append(Case(key, "no-such-choice", "choice", key))
    elif origin is tuple:
        item, item_meta = _unwrap(typing.get_args(tp)[0])
        if _is_model(item):
            cases += _node_cases(item, f"{key}[0]")  # the first element of the existing list
        else:
            cases += [Case(key, [bad], "type", f"{key}[0]") for bad in _wrong_types(item)[:2]]
            if typing.get_origin(item) is Literal:
                cases.append(Case(key, ["no-such-choice"], "choice", f"{key}[0]"))
            cases += [Case(key, [bad], "range", f"{key}[0]")
                      for bad in _out_of_range(item, _bounds(item_meta))[:1]]
        return cases
    return cases + [Case(key, v, "range", key) for v in _out_of_range(tp, bounds)]


def _node_cases(cls: type[BaseModel], path: str) -> list[Case]:
    cases = []
    if cls.model_config.get("extra") == "forbid":
        cases.append(Case(_join(path, BOGUS), 1, "unknown", _join(path, BOGUS)))
    for name, info in cls.model_fields.items():
        key = _join(path, name)
        cases.append(Case(key, DELETE, "missing", key))
        cases += _field_cases(info.annotation, list(info.metadata), key)
    return cases


# Rules that span several fields (params._validate), and whole-file shapes.
CROSS = [
    Case("data.coldstart.warm.train", 0.5, "cross", "data.coldstart.warm"),
    Case("data.ctr.split.valid", 0.3, "cross", "data.ctr.split"),
    Case("data.cf.split.test", 0.05, "cross", "data.cf.split"),
    Case("seeds", [], "cross", "seeds"),
    Case("seeds", [0, 1, 0], "cross", "seeds"),
    Case("download.sources", [], "cross", "download.sources"),
    Case("neighbors.scenarios", ["warm", "ics", "warm"], "cross", "neighbors.scenarios"),
    Case("download.sources[0].sha256", "abc123", "cross", "download.sources[0].sha256"),
    Case("download.sources[0].sha256", "z" * 64, "cross", "download.sources[0].sha256"),
    Case("", None, "type", "<top level>"),
    Case("", ["a", "list"], "type", "<top level>"),
]


def generate() -> list[Case]:
    """Every generated case plus :data:`CROSS`, in a stable order."""
    return _node_cases(params.Params, "") + CROSS


def counts(cases: list[Case]) -> dict[str, Counter[str]]:
    by_section: dict[str, Counter[str]] = {}
    for case in cases:
        by_section.setdefault(case.section, Counter())[case.kind] += 1
    return by_section


if __name__ == "__main__":
    cases = generate()
    table = counts(cases)
    kinds = ["unknown", "type", "range", "choice", "missing", "cross"]
    print(f"{'section':<12}" + "".join(f"{k:>9}" for k in kinds) + f"{'total':>9}")
    for section, c in sorted(table.items()):
        print(f"{section:<12}" + "".join(f"{c[k]:>9}" for k in kinds) + f"{sum(c.values()):>9}")
    total = Counter(case.kind for case in cases)
    print(f"{'all':<12}" + "".join(f"{total[k]:>9}" for k in kinds) + f"{len(cases):>9}")
