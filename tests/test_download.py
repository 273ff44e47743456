"""Download: checksums, corrupt archives, offline errors, byte-identical canonical tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from synthetic import sha256

from recdistill.data.canonical import DataError, load_canonical, parse_archive, validate, write_canonical
from recdistill.data.download import DownloadError, acquire
from recdistill.params import Expect, Source


def _source(name: str, path: Path, digest: str | None = None) -> Source:
    return Source(name=name, kind="file", url=str(path), sha256=digest or sha256(path))


def _expect(synth) -> Expect:  # noqa: ANN001
    return Expect(**synth.counts)


def test_both_sources_give_byte_identical_tables(tmp_path: Path, archives: dict[str, Path], synth) -> None:  # noqa: ANN001
    manifests = {}
    for name, archive in archives.items():
        canonical, used = acquire((_source(name, archive), _source("recbole", archives["recbole"])),
                                  tmp_path / "work", tmp_path / "manual", timeout=5)
        validate(canonical, _expect(synth))
        manifests[name] = write_canonical(canonical, tmp_path / f"out-{name}")
        assert used[0].source.name == name
    assert manifests["grouplens"] == manifests["recbole"]
    for table in ("ratings", "users", "items", "attributes"):
        a = (tmp_path / "out-grouplens" / f"{table}.parquet").read_bytes()
        assert a == (tmp_path / "out-recbole" / f"{table}.parquet").read_bytes(), table


def test_canonical_content(tmp_path: Path, archives: dict[str, Path], synth) -> None:  # noqa: ANN001
    c = parse_archive(archives["grouplens"])
    assert c.items.loc[0, "title"] == "Caf\u00e9 Society"  # Latin-1 decoded, year suffix stripped
    assert pd.isna(c.items["year"].iloc[-1])
    assert c.ratings["user"].min() == 0 and c.ratings["rating"].between(1, 5).all()
    first = synth.ratings[0]
    row = c.ratings[(c.ratings.user == first[0] - 1) & (c.ratings.item == first[1] - 1)]
    assert int(row.rating.iloc[0]) == first[2]
    attrs = parse_archive(archives["recbole"]).attributes
    assert set(attrs["kind"]) == {"director", "writer", "star", "country"}  # genre relation ignored
    assert 4 not in set(attrs["item"])  # item 5 has no KG link


def test_checksum_mismatch_lists_source_and_leaves_nothing(tmp_path: Path, archives: dict[str, Path]) -> None:
    bad = _source("recbole", archives["recbole"], "0" * 64)
    with pytest.raises(DownloadError) as err:
        acquire((bad,), tmp_path / "work", tmp_path / "manual", timeout=5)
    message = str(err.value)
    assert "recbole" in message and "sha256 mismatch" in message and "paths of the file sources" in message


def test_truncated_archive_is_a_clear_error(tmp_path: Path, archives: dict[str, Path]) -> None:
    truncated = tmp_path / "truncated.whl"
    truncated.write_bytes(archives["recbole"].read_bytes()[:1000])
    with pytest.raises(DownloadError, match="not a readable zip archive"):
        acquire((_source("cut", truncated),), tmp_path / "work", tmp_path / "manual", timeout=5)


def test_offline_error_lists_every_source(tmp_path: Path) -> None:
    sources = (Source(name="grouplens", kind="zip", url="http://127.0.0.1:9/ml-100k.zip", sha256="a" * 64),
               Source(name="local", kind="file", url=str(tmp_path / "missing.whl"), sha256="b" * 64))
    with pytest.raises(DownloadError) as err:
        acquire(sources, tmp_path / "work", tmp_path / "manual", timeout=2)
    assert "grouplens" in str(err.value) and "local" in str(err.value) and "missing.whl" in str(err.value)


def test_grouplens_alone_lacks_attributes(tmp_path: Path, archives: dict[str, Path]) -> None:
    with pytest.raises(DownloadError, match="item attributes"):
        acquire((_source("grouplens", archives["grouplens"]),), tmp_path / "w", tmp_path / "m", timeout=5)


def test_manual_dir_is_used_first(tmp_path: Path, archives: dict[str, Path]) -> None:
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "recbole-1.2.1-py3-none-any.whl").write_bytes(archives["recbole"].read_bytes())
    source = Source(name="recbole-wheel", kind="pip-wheel", url="recbole==1.2.1", sha256=sha256(archives["recbole"]))
    _, used = acquire((source,), tmp_path / "work", manual, timeout=5)
    assert used[0].path.parent == manual


@pytest.mark.parametrize(("field", "value", "message"), [
    ("ratings", 99, "expected 99 rows"), ("users", 61, "expected 61 rows"), ("items", 79, "expected 79 rows")])
def test_counts_are_checked(archives: dict[str, Path], synth, field: str, value: int, message: str) -> None:  # noqa: ANN001
    counts = synth.counts | {field: value}
    with pytest.raises(DataError, match=message):
        validate(parse_archive(archives["recbole"]), Expect(**counts))


def test_out_of_range_rating_and_duplicates(tmp_path: Path, synth) -> None:  # noqa: ANN001
    import synthetic
    bad = synthetic.make()
    bad.ratings[3, 2] = 6
    with pytest.raises(DataError, match="rating 6 is outside 1-5"):
        parse_archive(synthetic.write_recbole(bad, tmp_path / "bad.whl"))
    dup = synthetic.make()
    dup.ratings[1, :2] = dup.ratings[0, :2]
    c = parse_archive(synthetic.write_recbole(dup, tmp_path / "dup.whl"))
    with pytest.raises(DataError, match="duplicated"):
        validate(c, Expect(**dup.counts))


def test_failed_write_leaves_previous_output(tmp_path: Path, archives: dict[str, Path], monkeypatch) -> None:  # noqa: ANN001
    c = parse_archive(archives["recbole"])
    out = tmp_path / "canonical"
    write_canonical(c, out)
    before = sha256(out / "ratings.parquet")
    c.attributes = "not a frame"  # writing it fails half-way through the directory
    with pytest.raises(AttributeError):
        write_canonical(c, out)
    assert sha256(out / "ratings.parquet") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".canonical")]  # no temp left
    assert len(load_canonical(out).ratings) == len(c.ratings)


@pytest.mark.network
def test_real_download(tmp_path: Path) -> None:
    """Opt-in (pytest -m network): the real sources of params.yaml give ML-100K."""
    from recdistill import params
    p = params.load(Path(__file__).resolve().parents[1] / "params.yaml")
    canonical, _ = acquire(p.download.sources, tmp_path, tmp_path / "manual", p.download.timeout_s)
    validate(canonical, p.download.expect)
