"""recdistill.latency: side-by-side timing rounds, the table's medians and quartiles (against
numpy), and the schema of the file the report reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recdistill.arm import SchemaError
from recdistill.latency import latency_table, read_latency, time_side_by_side, write_latency

CPU = torch.device("cpu")


def test_every_round_calls_every_pass_once_in_a_seeded_shuffled_order() -> None:
    calls: list[str] = []
    passes = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    times = time_side_by_side(passes, CPU, rounds=30, seed=5)
    assert {name: len(t) for name, t in times.items()} == dict.fromkeys("abcd", 30)
    assert calls[:4] == list("abcd")  # one warm-up call each, in the given order
    rounds = [calls[4 + 4 * r: 8 + 4 * r] for r in range(30)]
    assert all(sorted(r) == list("abcd") for r in rounds)
    assert len({tuple(r) for r in rounds}) > 5  # shuffled: not one fixed order
    calls.clear()
    time_side_by_side(passes, CPU, rounds=30, seed=5)
    assert [calls[4 + 4 * r: 8 + 4 * r] for r in range(30)] == rounds  # the seed fixes the orders


def test_a_slower_pass_times_slower() -> None:
    def spin(n: int) -> float:
        return float(np.linalg.norm(np.random.default_rng(0).normal(size=(n, n)) @ np.ones(n)))
    times = time_side_by_side({"big": lambda: spin(600), "small": lambda: spin(20)}, CPU, rounds=5)
    assert np.median(times["big"]) > 3 * np.median(times["small"])


def test_table_medians_and_per_round_ratio_quartiles_match_numpy() -> None:
    rng = np.random.default_rng(0)
    teacher = rng.uniform(2, 4, 11)
    student = teacher * rng.uniform(0.2, 0.6, 11)
    table = latency_table("seq", {"teacher": list(teacher), "alone": list(student)}, teacher="teacher",
                          unit="all users", device=CPU)
    ratios = student / teacher  # per round, not a ratio of medians
    alone = table.models["alone"]
    assert alone.median_ms == pytest.approx(np.median(student), abs=1e-4)
    assert alone.ratio == pytest.approx(np.median(ratios), abs=1e-4)
    assert (alone.ratio_q1, alone.ratio_q3) == pytest.approx(tuple(np.percentile(ratios, [25, 75])), abs=1e-4)
    assert table.models["teacher"].ratio == 1.0 and (table.teacher, table.rounds, table.unit) == ("teacher", 11, "all users")
    assert table.threads == torch.get_num_threads() and table.device == "cpu"


def test_table_needs_the_teacher() -> None:
    with pytest.raises(ValueError, match="no timings of the teacher 'teacher' among \\['alone'\\]"):
        latency_table("ctr", {"alone": [1.0]}, teacher="teacher", unit="per 10k rows", device=CPU)


def test_file_round_trip_and_a_damaged_file_names_file_and_field(tmp_path: Path) -> None:
    table = latency_table("ctr", {"teacher": [2.0, 2.0], "alone": [1.0, 1.5]}, teacher="teacher",
                          unit="per 10k rows", device=CPU)
    path = tmp_path / "latency" / "ctr.json"
    write_latency(path, table)
    assert read_latency(path) == table
    raw = json.loads(path.read_text())
    del raw["models"]["alone"]["ratio"]
    path.write_text(json.dumps(raw))
    with pytest.raises(SchemaError, match=r"ctr\.json: missing required key 'models\.alone\.ratio'"):
        read_latency(path)
