"""Neighbor files as pickles that hold only plain containers and numpy arrays.

The neighbor stage writes pickles (as the published AGNN neighbor files are), but a pickle
can run arbitrary code when loaded, and these files travel through a DVC remote. So
:func:`write_pickle` checks that the object is made of plain containers (dict, list, tuple),
scalars (str, int, float, bool, None, bytes) and numpy arrays of numeric, bool or string
dtype, and :func:`read_pickle` loads through :class:`RestrictedUnpickler`, which resolves
only the few numpy globals that rebuild an array and refuses every other global
(``os.system``, ``builtins.eval``, any class) with :class:`UnsafePickleError`.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from recdistill.errors import UserError
from recdistill.io import atomic_path

__all__ = ["UnsafePickleError", "DamagedPickleError", "RestrictedUnpickler", "write_pickle", "read_pickle", "loads"]

PROTOCOL = 4  # numpy arrays pickle through _reconstruct; readable by every python >= 3.8

# The only globals a pickle of numpy arrays needs (numpy 1.x names and numpy 2.x names).
_ALLOWED = frozenset(
    [("numpy", "ndarray"), ("numpy", "dtype")]
    + [(f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")]
    + [(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")]
    + [("_codecs", "encode")]  # protocol 2 stores array bytes as latin-1 text; a pure function
)
_SCALARS = (str, int, float, bool, bytes, type(None))


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """The pickle refers to a global that is not a plain container or numpy array."""


class DamagedPickleError(UserError, pickle.UnpicklingError):
    """The file is not a readable pickle (truncated, corrupt, or not a pickle at all)."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy globals needed to rebuild arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load global {module}.{name}: neighbor pickles may hold only plain "
            "containers and numpy arrays (is this file from an untrusted source?)")


def loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    >>> loads(pickle.dumps({"ids": np.arange(3)}))["ids"].tolist()
    [0, 1, 2]
    """
    return RestrictedUnpickler(io.BytesIO(data)).load()


def _check_plain(obj: Any, where: str = "obj") -> None:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufcUS":
            raise TypeError(f"{where}: numpy arrays of dtype {obj.dtype} are not allowed")
    elif type(obj) is dict:  # exact types: subclasses (OrderedDict, ...) pickle as globals
        for key, value in obj.items():
            if not isinstance(key, _SCALARS):
                raise TypeError(f"{where}: dict key {key!r} is not a plain scalar")
            _check_plain(value, f"{where}[{key!r}]")
    elif type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    elif type(obj) not in _SCALARS:  # exact types: numpy scalars and subclasses are refused
        raise TypeError(f"{where}: {type(obj).__name__} is not a plain container, scalar or "
                        "numpy array")


def write_pickle(path: str | Path, obj: Any) -> None:
    """Write ``obj`` (plain containers + numpy arrays only) atomically to ``path``."""
    _check_plain(obj)
    with atomic_path(path) as tmp:
        tmp.write_bytes(pickle.dumps(obj, protocol=PROTOCOL))


def read_pickle(path: str | Path) -> Any:
    """Load a pickle written by :func:`write_pickle`; refuse anything else, naming the file."""
    path = Path(path)
    try:
        return loads(path.read_bytes())
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise DamagedPickleError(f"{path}: not a readable neighbor pickle "
                                     f"({type(err).__name__}: {err}); rebuild it with dvc repro") from None
