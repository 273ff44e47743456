"""Bad data through the download stage, run as a user would (``python stages/download.py``).

Each case builds a broken archive from the synthetic dataset, points a ``file`` source of a
temporary params.yaml at it and runs the stage where the canonical tables of an earlier
good run already exist. Every case must exit nonzero with one exception of the expected
class whose message names the file (archive member) or table at fault, leave the previous
data/canonical byte-identical (no temp folder left beside it), and end its MLflow run FAILED.
GroupLens' Latin-1 ``u.item`` must parse; invalid UTF-8 in a RecBole ``.item`` must not.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import relkit
import synthetic
import yaml

from recdistill.data.canonical import DataError
from recdistill.data.download import DownloadError

BASE = "recbole/dataset_example/ml-100k/ml-100k"
WHEEL = "recbole-synthetic.whl"


def rewrite(src: Path, dst: Path, suffix: str, edit: Callable[[bytes], bytes] | None) -> Path:
    """Copy a zip, passing the member ending in ``suffix`` through ``edit`` (None drops it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith(suffix):
                if edit is None:
                    continue
                data = edit(data)
            zout.writestr(info, data)
    return dst


def drop_column(index: int) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        lines = data.decode().splitlines()
        return "".join("\t".join(c for i, c in enumerate(line.split("\t")) if i != index) + "\n"
                       for line in lines).encode()
    return edit


def set_cell(row: int, column: int, value: str) -> Callable[[bytes], bytes]:
    """Replace one cell of a tab-separated member (row 0 is the header)."""
    def edit(data: bytes) -> bytes:
        lines = data.decode().splitlines()
        cells = lines[row].split("\t")
        cells[column] = value
        lines[row] = "\t".join(cells)
        return ("\n".join(lines) + "\n").encode()
    return edit


@dataclass
class BadCase:
    name: str
    build: Callable[[Path, Path], list[Path]]  # (case dir, good wheel) -> archives, in source order
    error: type[Exception]
    needles: tuple[str, ...]  # must appear in the message (file, member, table or column)
    params: dict[str, Any] = field(default_factory=dict)  # dotted key -> value
    sha: Callable[[Path], str] = synthetic.sha256  # the sha256 params lists for an archive


def _wheel(edit_suffix: str, edit: Callable[[bytes], bytes] | None) -> Callable[[Path, Path], list[Path]]:
    return lambda d, good: [rewrite(good, d / WHEEL, edit_suffix, edit)]


def _bytes(content: Callable[[bytes], bytes]) -> Callable[[Path, Path], list[Path]]:
    def build(d: Path, good: Path) -> list[Path]:
        (d / WHEEL).write_bytes(content(good.read_bytes()))
        return [d / WHEEL]
    return build


def _ratings(edit: Callable[[Any], None]) -> Callable[[Path, Path], list[Path]]:
    def build(d: Path, good: Path) -> list[Path]:
        data = synthetic.make()
        edit(data)
        return [synthetic.write_recbole(data, d / WHEEL)]
    return build


def _grouplens_only(edit_suffix: str, edit: Callable[[bytes], bytes]) -> Callable[[Path, Path], list[Path]]:
    def build(d: Path, good: Path) -> list[Path]:
        gl = synthetic.write_grouplens(synthetic.make(), d / "ml-100k-good.zip")
        return [rewrite(gl, d / "ml-100k.zip", edit_suffix, edit)]
    return build


def _append_duplicate(data: synthetic.Synthetic) -> None:
    import numpy as np
    data.ratings = np.vstack([data.ratings, data.ratings[:1]])


def _duplicate_pair(data: synthetic.Synthetic) -> None:
    data.ratings[1, :2] = data.ratings[0, :2]


def _gender(data: synthetic.Synthetic) -> None:
    data.users[3] = (*data.users[3][:2], "X", *data.users[3][3:])


def _unknown_user(data: synthetic.Synthetic) -> None:
    data.ratings[5, 0] = 999


def _crc_build(d: Path, good: Path) -> list[Path]:
    """Flip bytes inside the stored .inter member of the wheel (central directory intact)."""
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.getinfo(BASE + ".inter")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100
    raw[start:start + 8] = bytes(b ^ 0x55 for b in raw[start:start + 8])
    (d / WHEEL).write_bytes(bytes(raw))
    return [d / WHEEL]


n_ratings = len(synthetic.make().ratings)
CASES = [
    BadCase("truncated", _bytes(lambda b: b[: len(b) // 2]), DownloadError,
            ("not a readable zip archive", WHEEL, "synthetic [file]")),
    BadCase("truncated-listed-sha", _bytes(lambda b: b[: len(b) // 2]), DownloadError,
            ("sha256 mismatch for " + WHEEL, "data/external"),
            sha=lambda p: synthetic.sha256(p.parent.parent / "ws-wheel" / WHEEL)),
    BadCase("wrong-checksum", _bytes(lambda b: b), DownloadError,
            ("sha256 mismatch for " + WHEEL, "expected " + "0" * 64, "data/external"),
            sha=lambda p: "0" * 64),
    BadCase("corrupt-member-crc", _crc_build, DownloadError,
            ("corrupt archive member", "Bad CRC-32", BASE + ".inter")),
    BadCase("html-not-zip", _bytes(lambda b: b"<html>503 Service Unavailable</html>\n"), DownloadError,
            ("not a readable zip archive", WHEEL)),
    BadCase("missing-member", _wheel(".user", None), DownloadError,
            ("the archive has no " + BASE + ".user", WHEEL)),
    BadCase("missing-column", _wheel(".inter", drop_column(2)), DownloadError,
            (".inter", "missing column(s) ['rating']")),
    BadCase("grouplens-missing-column", _grouplens_only("u.data", drop_column(3)), DownloadError,
            ("synthetic (ml-100k.zip):u.data", "expected 4 columns")),
    BadCase("rating-6", _wheel(".inter", set_cell(4, 2, "6")), DownloadError,
            (".inter", "rating 6 is outside 1-5")),
    BadCase("rating-not-integer", _wheel(".inter", set_cell(2, 2, "4.5")), DownloadError,
            (".inter", "column 'rating' has a non-integer value '4.5'")),
    # validation failures make the source fail (the next one is tried), so they end as a
    # DownloadError that lists the source, the archive and the DataError's message
    BadCase("duplicated-pair", _ratings(_duplicate_pair), DownloadError,
            ("ratings: duplicated (user, item)",)),
    BadCase("duplicated-row", _ratings(_append_duplicate), DownloadError,
            ("ratings: duplicated (user, item)",), params={"download.expect.ratings": n_ratings + 1}),
    BadCase("non-utf8-title", _wheel(".item", lambda b: b.replace("Caf\u00e9".encode(), b"Caf\xe9")),
            DownloadError, (".item", "not valid utf-8")),
    BadCase("unknown-genre", _wheel(".item", set_cell(3, 3, "Action Telenovela")), DownloadError,
            (".item", "unknown genre(s) ['Telenovela']")),
    BadCase("unknown-user-id", _ratings(_unknown_user), DownloadError, ("ratings: user id outside 1..60",)),
    BadCase("bad-gender", _ratings(_gender), DownloadError, ("users: gender must be 'M' or 'F'",)),
    BadCase("count-mismatch", _bytes(lambda b: b), DownloadError,
            ("ratings: expected", "download.expect.ratings"), params={"download.expect.ratings": 100_000}),
]


def _run_case(case: BadCase, root: Path, workspace: Path, *, previous: bool) -> dict[str, Any]:
    d = root / f"{case.name}-{'prev' if previous else 'fresh'}"
    d.mkdir(parents=True)
    good_dir = root / "ws-wheel"
    archives = case.build(d, good_dir / WHEEL)
    p = yaml.safe_load((workspace / "params.yaml").read_text())
    p["download"]["sources"] = [{"name": "synthetic" if i == 0 else f"synthetic-{i}", "kind": "file",
                                 "url": str(a), "sha256": case.sha(a)} for i, a in enumerate(archives)]
    for key, value in case.params.items():
        relkit.set_path(p, key, value)
    relkit.write_yaml(d / "params.yaml", p)
    if previous:
        relkit.copy_workspace(workspace / "data" / "canonical", d / "data" / "canonical")
    before = relkit.snapshot(d / "data" / "canonical")
    store = relkit.seeded_store(d / "mlflow.db")
    proc = relkit.run([relkit.stage("download.py"), "data/canonical"], d, store)
    return {"proc": proc, "before": before, "after": relkit.snapshot(d / "data" / "canonical"),
            "temps": relkit.stray_temps(d / "data"), "runs": relkit.run_status(store), "dir": d}


@pytest.fixture(scope="module")
def results(workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """All cases at once, two processes at a time; a few also without earlier outputs."""
    root = tmp_path_factory.mktemp("bad-data")
    (root / "ws-wheel").mkdir()
    (root / "ws-wheel" / WHEEL).write_bytes((workspace / WHEEL).read_bytes())
    fresh = {"truncated", "non-utf8-title"}
    jobs = [(c, True) for c in CASES] + [(c, False) for c in CASES if c.name in fresh]
    out = relkit.run_many([lambda c=c, prev=prev: _run_case(c, root, workspace, previous=prev)
                           for c, prev in jobs])
    return {f"{c.name}-{'prev' if prev else 'fresh'}": r
            for (c, prev), r in zip(jobs, out, strict=True)}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_archive_is_a_clear_error_and_keeps_previous_output(results: dict[str, Any],
                                                                case: BadCase) -> None:
    r = results[f"{case.name}-prev"]
    relkit.assert_fails_with(r["proc"], case.error, *case.needles)
    assert r["before"] is not None and r["after"] == r["before"], "previous data/canonical changed"
    assert r["temps"] == [], f"temporary left beside the output: {r['temps']}"
    assert r["runs"] == {"download": ["FAILED"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["truncated", "non-utf8-title"])
def test_bad_archive_leaves_no_output(results: dict[str, Any], name: str) -> None:
    r = results[f"{name}-fresh"]
    assert r["proc"].returncode != 0
    assert r["after"] is None and r["temps"] == [] and not (r["dir"] / "data" / "canonical").exists()


@pytest.mark.parametrize("name", ["duplicated-pair", "unknown-user-id", "bad-gender", "count-mismatch"])
def test_validation_error_names_the_archive(results: dict[str, Any], name: str) -> None:
    message = relkit.error_message(results[f"{name}-prev"]["proc"], DownloadError)
    assert f"synthetic ({WHEEL}): " in message  # the DataError, prefixed with its source


@pytest.mark.slow
def test_latin1_grouplens_item_titles_parse(tmp_path: Path, workspace: Path) -> None:
    """GroupLens' u.item is Latin-1: 'Café Society' is byte \\xe9 there and must come out as é."""
    gl = synthetic.write_grouplens(synthetic.make(), tmp_path / "ml-100k.zip")
    with zipfile.ZipFile(gl) as z:
        assert b"Caf\xe9 Society" in z.read("ml-100k/u.item")  # really Latin-1, not UTF-8
    wheel = workspace / WHEEL
    p = yaml.safe_load((workspace / "params.yaml").read_text())
    p["download"]["sources"] = [
        {"name": "grouplens", "kind": "file", "url": str(gl), "sha256": synthetic.sha256(gl)},
        {"name": "wheel", "kind": "file", "url": str(wheel), "sha256": synthetic.sha256(wheel)}]
    relkit.write_yaml(tmp_path / "params.yaml", p)
    store = relkit.seeded_store(tmp_path / "mlflow.db")
    proc = relkit.run([relkit.stage("download.py"), "data/canonical"], tmp_path, store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    items = pd.read_parquet(tmp_path / "data/canonical/items.parquet")
    assert items.loc[items["item"] == 0, "title"].item() == "Caf\u00e9 Society"
    # same bytes as the tables parsed from the UTF-8 wheel alone
    for table in ("ratings", "users", "items", "attributes"):
        assert relkit.sha256(tmp_path / f"data/canonical/{table}.parquet") == \
            relkit.sha256(workspace / f"data/canonical/{table}.parquet"), table
    assert relkit.run_status(store) == {"download": ["FINISHED"]}


@pytest.mark.slow
def test_corrupt_first_source_falls_back_to_the_next(tmp_path: Path, workspace: Path) -> None:
    """A source that verifies but does not parse is reported and the next source is used."""
    gl = synthetic.write_grouplens(synthetic.make(), tmp_path / "good.zip")
    bad = rewrite(gl, tmp_path / "ml-100k.zip", "u.data", drop_column(3))
    wheel = workspace / WHEEL
    p = yaml.safe_load((workspace / "params.yaml").read_text())
    p["download"]["sources"] = [
        {"name": "grouplens", "kind": "file", "url": str(bad), "sha256": synthetic.sha256(bad)},
        {"name": "wheel", "kind": "file", "url": str(wheel), "sha256": synthetic.sha256(wheel)}]
    relkit.write_yaml(tmp_path / "params.yaml", p)
    store = relkit.seeded_store(tmp_path / "mlflow.db")
    proc = relkit.run([relkit.stage("download.py"), "data/canonical"], tmp_path, store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "source grouplens failed" in proc.stderr and "expected 4 columns" in proc.stderr
    assert relkit.sha256(tmp_path / "data/canonical/ratings.parquet") == \
        relkit.sha256(workspace / "data/canonical/ratings.parquet")


@pytest.mark.slow
def test_prepare_without_canonical_tables(tmp_path: Path, workspace: Path) -> None:
    """prepare before download (or with a table deleted): DataError naming the missing file."""
    ws = relkit.copy_workspace(workspace, tmp_path / "ws")
    (ws / "data/canonical/ratings.parquet").unlink()
    before = relkit.snapshot(ws / "data/prepared")
    store = relkit.seeded_store(tmp_path / "mlflow.db")
    proc = relkit.run([relkit.stage("prepare.py"), "data/canonical", "data/prepared",
                       "metrics/prepare.json"], ws, store)
    relkit.assert_fails_with(proc, DataError, "data/canonical", "ratings.parquet", "dvc repro download")
    assert relkit.snapshot(ws / "data/prepared") == before
    assert relkit.stray_temps(ws / "data") == []
    assert relkit.run_status(store) == {"prepare": ["FAILED"]}
