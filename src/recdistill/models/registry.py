"""Models by name: each track's registry maps the ``name`` of an architecture block in
``params.yaml`` to the block's schema and to the function that builds the model.

A model file defines its module and its architecture schema (an :class:`Arch` whose
``name`` is a ``Literal``); the track lists it in its registry. ``Registry.arch`` is the
discriminated union over the registered schemas: ``name`` picks the schema, which then
validates the rest of the block with the params' error format (key path, value, what is
accepted). ``Registry.build`` turns an architecture and the track's data context (vocabulary
sizes, graph, ...) into a module. So adding a model to a track touches its model file, one
registry entry, ``params.yaml`` and ``dvc.yaml``.

>>> reg = Registry("demo", {"linear": Entry(Arch, lambda arch, n_in: nn.Linear(n_in, 3))})
>>> reg.build(reg.arch({"name": "linear"}, "train.demo.model"), 5)
Linear(in_features=5, out_features=3, bias=True)
>>> reg.arch({"name": "linear", "width": 3}, "train.demo.model")
Traceback (most recent call last):
...
recdistill.params.ParamsError: params.yaml: unknown key 'train.demo.model.width'; accepted keys here: name
>>> reg.arch({"name": "conv"}, "train.demo.model")
Traceback (most recent call last):
...
recdistill.params.ParamsError: params.yaml: train.demo.model.name = 'conv' is invalid: expected one of 'linear'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from torch import nn

from recdistill.params import Frozen, ParamsError, describe_error, section_dict

__all__ = ["Arch", "Entry", "Registry"]

C = TypeVar("C")  # the data context a track's builders take


class Arch(Frozen):
    """An architecture block; subclasses narrow ``name`` to a ``Literal``."""

    name: str


@dataclass(frozen=True)
class Entry(Generic[C]):
    """One registered model: its architecture schema and its builder."""

    arch: type[Arch]
    build: Callable[[Any, C], nn.Module]  # (architecture of type ``arch``, context) -> module


class Registry(Generic[C]):
    """The models one track (or one role of a track) can build, by name."""

    def __init__(self, what: str, entries: Mapping[str, Entry[C]]) -> None:
        self.what = what  # e.g. "ctr teacher", for messages
        self.entries = dict(entries)

    def arch(self, block: BaseModel | Mapping[str, Any], path: str, source: str = "params.yaml") -> Arch:
        """The typed architecture of a ``model:`` block at key path ``path`` of ``source``
        (ParamsError naming both if bad)."""
        raw = section_dict(block) if isinstance(block, BaseModel) else dict(block)
        name = raw.get("name")
        if name not in self.entries:
            accepted = ", ".join(repr(n) for n in self.entries)
            raise ParamsError(f"{source}: {path}.name = {name!r} is invalid: expected one of {accepted}")
        schema = self.entries[name].arch
        try:
            return schema.model_validate(raw)
        except ValidationError as err:
            raise ParamsError(f"{source}: {describe_error(err, schema, path.split('.'))}") from None

    def build(self, arch: Arch, context: C) -> nn.Module:
        """The module of ``arch`` for ``context``."""
        if arch.name not in self.entries:
            raise ParamsError(f"{self.what} model {arch.name!r} is not registered; "
                              f"accepted: {', '.join(self.entries)}")
        return self.entries[arch.name].build(arch, context)
