"""A tiny MovieLens-shaped dataset, written in both source formats (no network needed).

The same ratings/users/items are written as a GroupLens ``ml-100k.zip`` and as a RecBole
wheel (with ``.kg``/``.link`` attributes), so tests can check that both parse into
byte-identical canonical tables and can run the whole pipeline offline.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recdistill.data.canonical import GENRES

OCCUPATIONS = ("engineer", "student", "writer", "artist", "other")
RELATIONS = ("film.film.directed_by", "film.film.written_by", "film.film.actor", "film.film.country")
GROUPLENS_TITLES = {0: "Caf\u00e9 Society", 1: "Toy Story"}  # a Latin-1 accented title, as in u.item


@dataclass
class Synthetic:
    ratings: np.ndarray  # (N, 4) user_id, item_id (1-based), rating, timestamp
    users: list[tuple[int, int, str, str, str]]
    items: list[tuple[int, str, int | None, list[str]]]  # id, title, year, genres
    links: list[tuple[int, str]]
    kg: list[tuple[str, str, str]]

    @property
    def counts(self) -> dict[str, int]:
        return {"ratings": len(self.ratings), "users": len(self.users), "items": len(self.items)}


def make(n_users: int = 60, n_items: int = 80, per_user: tuple[int, int] = (12, 30),
         seed: int = 0) -> Synthetic:
    """Users with latent tastes rate items with latent genres, so models can learn something."""
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(n_users, 4))
    profile = rng.normal(size=(n_items, 4))
    rows = []
    for u in range(n_users):
        k = int(rng.integers(*per_user))
        chosen = rng.choice(n_items, size=k, replace=False)
        affinity = profile[chosen] @ taste[u]
        stars = np.clip(np.round(3.2 + 0.9 * affinity + rng.normal(scale=0.5, size=k)), 1, 5)
        times = 880_000_000 + rng.integers(0, 5_000_000, size=k)
        rows += [(u + 1, int(i) + 1, int(r), int(t)) for i, r, t in zip(chosen, stars, times)]
    users = [(u + 1, int(rng.integers(12, 70)), "MF"[u % 2], OCCUPATIONS[u % len(OCCUPATIONS)],
              f"{int(rng.integers(10000, 99999))}" if u % 7 else "T8H1N") for u in range(n_users)]
    items = []
    for i in range(n_items):
        genres = [GENRES[1 + int(np.argmax(profile[i])) * 3], GENRES[1 + (i % 17)]]
        year = None if i == n_items - 1 else 1950 + int(rng.integers(0, 48))
        items.append((i + 1, GROUPLENS_TITLES.get(i, f"Movie {i + 1}"), year, sorted(set(genres))))
    links = [(i + 1, f"m.film{i}") for i in range(n_items) if i % 5 != 4]  # some items unlinked
    kg = []
    for i, entity in links:
        kg.append((entity, "film.film.directed_by", f"m.dir{i % 9}"))
        kg.append((entity, "film.film.actor", f"m.star{i % 13}"))
        kg.append((entity, "film.film.actor", f"m.star{(i * 7) % 13}"))
        kg.append((entity, "film.film.country", f"m.country{i % 3}"))
        kg.append((entity, "film.film.genre", f"m.genre{i % 4}"))  # a relation we ignore
        if i % 2:
            kg.append((entity, "film.film.written_by", f"m.writer{i % 6}"))
    return Synthetic(np.array(rows, dtype=np.int64), users, items, links, kg)


def write_grouplens(data: Synthetic, path: Path) -> Path:
    """``ml-100k.zip`` as GroupLens ships it (u.item in Latin-1, '|'-separated)."""
    data_lines = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in data.ratings)
    user_lines = "".join(f"{u}|{a}|{g}|{o}|{z}\n" for u, a, g, o, z in data.users)
    item_lines = ""
    for i, title, year, genres in data.items:
        date = f"01-Jan-{year}" if year else ""
        full = f"{title} ({year})" if year else title
        flags = "|".join("1" if g in genres else "0" for g in GENRES)
        item_lines += f"{i}|{full}|{date}||http://example.invalid/{i}|{flags}\n"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ml-100k/u.data", data_lines)
        z.writestr("ml-100k/u.user", user_lines)
        z.writestr("ml-100k/u.item", item_lines.encode("latin-1"))
    return path


def write_recbole(data: Synthetic, path: Path) -> Path:
    """A wheel-shaped zip holding RecBole's atomic files for ml-100k."""
    base = "recbole/dataset_example/ml-100k/ml-100k"
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in data.ratings)
    user = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n" + "".join(
        f"{u}\t{a}\t{g}\t{o}\t{z}\n" for u, a, g, o, z in data.users)
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(
        f"{i}\t{t}\t{y if y else ''}\t{' '.join(g)}\n" for i, t, y, g in data.items)
    link = "item_id:token\tentity_id:token\n" + "".join(f"{i}\t{e}\n" for i, e in data.links)
    kg = "head_id:token\trelation_id:token\ttail_id:token\n" + "".join(
        f"{h}\t{r}\t{t}\n" for h, r, t in data.kg)
    with zipfile.ZipFile(path, "w") as z:
        for suffix, text in ((".inter", inter), (".user", user), (".item", item),
                             (".link", link), (".kg", kg)):
            z.writestr(base + suffix, text)
        z.writestr("recbole-1.2.1.dist-info/METADATA", "Name: recbole\nVersion: 1.2.1\n")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
