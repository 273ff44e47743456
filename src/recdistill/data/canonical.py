"""Canonical MovieLens-100K tables, parsed from either source format.

Two archives carry ML-100K: the GroupLens ``ml-100k.zip`` (``u.data``, ``u.user``,
``u.item`` in Latin-1) and the RecBole wheel (``ml-100k.inter/.user/.item/.kg/.link``,
UTF-8). Both parse into the same :class:`Canonical` tables, so the Parquet files and their
sha256 manifest are byte-identical whatever the source:

- ratings: user, item (0-based: MovieLens id - 1, int64), rating (int8 1-5), timestamp (int64)
- users: user, age (int16), gender ('M'/'F'), occupation, zip (str)
- items: item, title (str, year suffix removed), year (Int16, null when unknown), and one
  int8 column per genre in :data:`GENRE_COLUMNS`
- attributes: item, kind (director / writer / star / country), value (Freebase id); from the
  ``.kg``/``.link`` files, which only the RecBole wheel carries.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recdistill.errors import UserError
from recdistill.io import atomic_path, write_json
from recdistill.params import Expect

__all__ = ["GENRES", "GENRE_COLUMNS", "ATTRIBUTE_RELATIONS", "Canonical", "DataError",
           "parse_archive", "has_attributes", "validate", "write_canonical", "load_canonical"]

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")
GENRE_COLUMNS = ("genre_unknown", "genre_action", "genre_adventure", "genre_animation",
                 "genre_childrens", "genre_comedy", "genre_crime", "genre_documentary",
                 "genre_drama", "genre_fantasy", "genre_film_noir", "genre_horror", "genre_musical",
                 "genre_mystery", "genre_romance", "genre_sci_fi", "genre_thriller", "genre_war",
                 "genre_western")
ATTRIBUTE_RELATIONS = {"film.film.directed_by": "director", "film.film.written_by": "writer",
                       "film.film.actor": "star", "film.film.country": "country"}
TABLES = ("ratings", "users", "items", "attributes")
_GROUPLENS = "ml-100k/"
_RECBOLE = "recbole/dataset_example/ml-100k/ml-100k"


class DataError(UserError, ValueError):
    """The input data is malformed: missing file or column, bad value, wrong counts."""


@dataclass
class Canonical:
    ratings: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    attributes: pd.DataFrame


def _read(archive: zipfile.ZipFile, name: str, origin: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError:
        raise DataError(f"{origin}: the archive has no {name}") from None


def _table(raw: bytes, sep: str, names: list[str], origin: str, encoding: str = "utf-8",
           header: bool = False) -> pd.DataFrame:
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise DataError(f"{origin}: not valid {encoding} text ({err})") from None
    df = pd.read_csv(io.StringIO(text), sep=sep, header=0 if header else None, dtype=str,
                     keep_default_na=False, quoting=3)
    if header:
        df.columns = [c.split(":")[0] for c in df.columns]
        missing = [c for c in names if c not in df.columns]
        if missing:
            raise DataError(f"{origin}: missing column(s) {missing}; found {list(df.columns)}")
        return df[names]
    if df.shape[1] != len(names):
        raise DataError(f"{origin}: expected {len(names)} columns {names}, found {df.shape[1]}")
    df.columns = names
    return df


def _ints(series: pd.Series, origin: str, column: str) -> pd.Series:
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"{origin}: column {column!r} has a non-integer value "
                        f"{series.iloc[row]!r} at row {row}")
    return values.astype("int64")


def _ratings(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    out = pd.DataFrame({"user": _ints(df["user_id"], origin, "user_id") - 1,
                        "item": _ints(df["item_id"], origin, "item_id") - 1,
                        "rating": _ints(df["rating"], origin, "rating"),
                        "timestamp": _ints(df["timestamp"], origin, "timestamp")})
    bad = ~out["rating"].between(1, 5)
    if bad.any():
        raise DataError(f"{origin}: rating {int(out['rating'][bad].iloc[0])} is outside 1-5 "
                        f"({int(bad.sum())} such rows)")
    out["rating"] = out["rating"].astype("int8")
    return out.sort_values(["user", "item"], kind="stable").reset_index(drop=True)


def _users(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    out = pd.DataFrame({"user": _ints(df["user_id"], origin, "user_id") - 1,
                        "age": _ints(df["age"], origin, "age").astype("int16"),
                        "gender": df["gender"].astype(str), "occupation": df["occupation"].astype(str),
                        "zip": df["zip_code"].astype(str)})
    return out.sort_values("user", kind="stable").reset_index(drop=True)


def _items(ids: pd.Series, titles: pd.Series, years: pd.Series, genre_flags: pd.DataFrame,
           origin: str) -> pd.DataFrame:
    year = pd.to_numeric(years, errors="coerce").astype("Int16")
    out = pd.DataFrame({"item": _ints(ids, origin, "item_id") - 1,
                        "title": titles.astype(str).str.strip(), "year": year})
    for column in GENRE_COLUMNS:
        out[column] = genre_flags[column].to_numpy().astype("int8")
    return out.sort_values("item", kind="stable").reset_index(drop=True)


def _parse_grouplens(archive: zipfile.ZipFile, origin: str) -> Canonical:
    ratings = _table(_read(archive, _GROUPLENS + "u.data", origin), "\t",
                     ["user_id", "item_id", "rating", "timestamp"], f"{origin}:u.data")
    users = _table(_read(archive, _GROUPLENS + "u.user", origin), "|",
                   ["user_id", "age", "gender", "occupation", "zip_code"], f"{origin}:u.user")
    item_cols = ["item_id", "title", "release", "video", "url", *GENRE_COLUMNS]
    # u.item is Latin-1 (accented titles); decoding it as UTF-8 fails on e.g. item 1633.
    items = _table(_read(archive, _GROUPLENS + "u.item", origin), "|", item_cols,
                   f"{origin}:u.item", encoding="latin-1")
    titles = items["title"].str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True)
    years = items["release"].str.extract(r"(\d{4})$")[0]
    flags = items[list(GENRE_COLUMNS)].apply(lambda c: _ints(c, f"{origin}:u.item", c.name))
    return Canonical(_ratings(ratings, f"{origin}:u.data"), _users(users, f"{origin}:u.user"),
                     _items(items["item_id"], titles, years, flags, f"{origin}:u.item"),
                     _empty_attributes())


def _parse_recbole(archive: zipfile.ZipFile, origin: str) -> Canonical:
    ratings = _table(_read(archive, _RECBOLE + ".inter", origin), "\t",
                     ["user_id", "item_id", "rating", "timestamp"], f"{origin}:.inter", header=True)
    users = _table(_read(archive, _RECBOLE + ".user", origin), "\t",
                   ["user_id", "age", "gender", "occupation", "zip_code"], f"{origin}:.user", header=True)
    items = _table(_read(archive, _RECBOLE + ".item", origin), "\t",
                   ["item_id", "movie_title", "release_year", "class"], f"{origin}:.item", header=True)
    tokens = items["class"].str.split()
    unknown = sorted({t for ts in tokens for t in ts} - set(GENRES))
    if unknown:
        raise DataError(f"{origin}:.item: unknown genre(s) {unknown}; expected {GENRES}")
    flags = pd.DataFrame({col: tokens.map(lambda ts, g=g: int(g in ts))
                          for g, col in zip(GENRES, GENRE_COLUMNS)})
    canonical = Canonical(_ratings(ratings, f"{origin}:.inter"), _users(users, f"{origin}:.user"),
                          _items(items["item_id"], items["movie_title"], items["release_year"],
                                 flags, f"{origin}:.item"), _empty_attributes())
    canonical.attributes = _parse_attributes(archive, origin)
    return canonical


def _empty_attributes() -> pd.DataFrame:
    return pd.DataFrame({"item": pd.Series(dtype="int64"), "kind": pd.Series(dtype=str),
                         "value": pd.Series(dtype=str)})


def _parse_attributes(archive: zipfile.ZipFile, origin: str) -> pd.DataFrame:
    link = _table(_read(archive, _RECBOLE + ".link", origin), "\t", ["item_id", "entity_id"],
                  f"{origin}:.link", header=True)
    kg = _table(_read(archive, _RECBOLE + ".kg", origin), "\t",
                ["head_id", "relation_id", "tail_id"], f"{origin}:.kg", header=True)
    kg = kg[kg["relation_id"].isin(list(ATTRIBUTE_RELATIONS))]
    merged = kg.merge(link, left_on="head_id", right_on="entity_id", how="inner")
    out = pd.DataFrame({"item": _ints(merged["item_id"], f"{origin}:.link", "item_id") - 1,
                        "kind": merged["relation_id"].map(ATTRIBUTE_RELATIONS).astype(str),
                        "value": merged["tail_id"].astype(str)})
    out = out.drop_duplicates().sort_values(["item", "kind", "value"], kind="stable")
    return out.reset_index(drop=True)


def has_attributes(archive_path: Path) -> bool:
    """True when the archive carries the ``.kg``/``.link`` item attributes (RecBole wheel)."""
    with zipfile.ZipFile(archive_path) as archive:
        return _RECBOLE + ".kg" in archive.namelist()


def parse_archive(archive_path: Path, origin: str | None = None) -> Canonical:
    """Parse a GroupLens zip or a RecBole wheel (detected by content) into canonical tables."""
    origin = origin or archive_path.name
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{origin}: not a readable zip archive ({err}); the file may be "
                        "truncated or corrupt") from None
    with archive:
        names = set(archive.namelist())
        try:
            if _GROUPLENS + "u.data" in names:
                return _parse_grouplens(archive, origin)
            if _RECBOLE + ".inter" in names:
                return _parse_recbole(archive, origin)
        except (zipfile.BadZipFile, EOFError, OSError) as err:  # truncated member data
            raise DataError(f"{origin}: corrupt archive member ({err})") from None
    raise DataError(f"{origin}: neither a GroupLens ml-100k.zip (ml-100k/u.data) nor a RecBole "
                    f"wheel ({_RECBOLE}.inter)")


def _check_ids(ids: pd.Series, n: int, what: str) -> None:
    if ids.duplicated().any():
        raise DataError(f"{what}: duplicated id {int(ids[ids.duplicated()].iloc[0]) + 1}")
    if len(ids) != n or ids.min() != 0 or ids.max() != n - 1:
        raise DataError(f"{what}: ids must be 1..{n} with none missing; found {len(ids)} ids "
                        f"from {ids.min() + 1} to {ids.max() + 1}")


def validate(c: Canonical, expect: Expect) -> None:
    """Counts, ranges and referential integrity; raise :class:`DataError` naming the problem."""
    for what, table, n in (("ratings", c.ratings, expect.ratings), ("users", c.users, expect.users),
                           ("items", c.items, expect.items)):
        if len(table) != n:
            raise DataError(f"{what}: expected {n:,} rows (download.expect.{what}), found {len(table):,}")
    _check_ids(c.users["user"], expect.users, "users")
    _check_ids(c.items["item"], expect.items, "items")
    pairs = c.ratings.duplicated(["user", "item"])
    if pairs.any():
        row = c.ratings[pairs].iloc[0]
        raise DataError(f"ratings: duplicated (user, item) = ({row['user'] + 1}, {row['item'] + 1}); "
                        f"{int(pairs.sum())} duplicate rows")
    for column, n in (("user", expect.users), ("item", expect.items)):
        if not c.ratings[column].between(0, n - 1).all():
            raise DataError(f"ratings: {column} id outside 1..{n}")
    if not c.users["gender"].isin(["M", "F"]).all():
        raise DataError("users: gender must be 'M' or 'F'")


def write_canonical(c: Canonical, out_dir: Path) -> dict[str, str]:
    """Write the four tables and ``manifest.json`` (sha256 per table) into ``out_dir`` atomically."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        digests = {}
        for name in TABLES:
            path = tmp / f"{name}.parquet"
            getattr(c, name).to_parquet(path, index=False, engine="pyarrow", compression="zstd")
            digests[f"{name}.parquet"] = hashlib.sha256(path.read_bytes()).hexdigest()
        write_json(tmp / "manifest.json", {"tables": digests, "counts": {
            name: len(getattr(c, name)) for name in TABLES}})
    return digests


def load_canonical(root: str | Path = "data/canonical") -> Canonical:
    """Read the tables written by the download stage."""
    root = Path(root)
    missing = [f"{n}.parquet" for n in TABLES if not (root / f"{n}.parquet").is_file()]
    if missing:
        raise DataError(f"{root}: missing {missing}; run `dvc repro download` first")
    return Canonical(*(pd.read_parquet(root / f"{name}.parquet") for name in TABLES))
