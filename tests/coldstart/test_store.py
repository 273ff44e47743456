"""The neighbor pickle store: round trip, and the restricted unpickler refuses code."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from recdistill.graph.store import UnsafePickleError, read_pickle, write_pickle


class _RunsShell:
    """What a malicious pickle looks like: unpickling calls os.system(command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def test_round_trip_of_plain_payload(tmp_path: Path) -> None:
    payload = {"format": 1, "users": {"neighbors": np.arange(6, dtype=np.int64).reshape(2, 3),
                                      "weights": np.full((2, 3), 1 / 3, dtype=np.float32),
                                      "warm": np.array([True, False]),
                                      "columns": np.array(["gender=F", "age=1"])},
               "shape": [2, 3], "name": "ics", "none": None, "pair": (1.5, b"x")}
    write_pickle(tmp_path / "g.pkl", payload)
    back = read_pickle(tmp_path / "g.pkl")
    assert back.keys() == payload.keys() and back["shape"] == [2, 3] and back["pair"] == (1.5, b"x")
    for key, value in payload["users"].items():
        np.testing.assert_array_equal(back["users"][key], value)
        assert back["users"][key].dtype == value.dtype


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_load_under_every_protocol(tmp_path: Path, protocol: int) -> None:
    arrays = {"f": np.linspace(0, 1, 5, dtype=np.float32), "i": np.arange(4), "b": np.zeros(2, bool)}
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(arrays, protocol=protocol))
    back = read_pickle(tmp_path / "a.pkl")
    for key, value in arrays.items():
        np.testing.assert_array_equal(back[key], value)


def test_refuses_a_pickle_that_calls_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"neighbors": _RunsShell(f"touch {marker}")}))
    with pytest.raises(UnsafePickleError, match=r"(posix|os)\.system"):
        read_pickle(evil)
    assert not marker.exists(), "the command ran"


@pytest.mark.parametrize("obj", [collections.OrderedDict(a=1), {1, 2}.__class__, eval])
def test_refuses_any_other_global(tmp_path: Path, obj: object) -> None:
    (tmp_path / "x.pkl").write_bytes(pickle.dumps(obj))
    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        read_pickle(tmp_path / "x.pkl")


@pytest.mark.parametrize("bad", [{"a": np.float64(1.0)}, {"a": np.array([object()])},
                                 {"a": collections.OrderedDict()}, {(1, 2): 3}])
def test_writer_rejects_what_the_reader_would_refuse(tmp_path: Path, bad: object) -> None:
    with pytest.raises(TypeError):
        write_pickle(tmp_path / "bad.pkl", bad)
    assert not (tmp_path / "bad.pkl").exists()
