"""User demographic buckets shared by the coldstart and ctr tracks."""

from __future__ import annotations

import numpy as np

__all__ = ["AGE_EDGES", "age_bucket", "zip_prefix"]

AGE_EDGES = (18, 25, 35, 45, 50, 56)  # the MovieLens-1M age groups: <18, 18-24, ..., 56+


def age_bucket(ages: np.ndarray) -> np.ndarray:
    """Age in years -> bucket index 0..6 (int64).

    >>> age_bucket(np.array([7, 18, 24, 25, 56, 73])).tolist()
    [0, 1, 1, 2, 6, 6]
    """
    return np.searchsorted(np.asarray(AGE_EDGES), np.asarray(ages), side="right").astype(np.int64)


def zip_prefix(zips: np.ndarray) -> np.ndarray:
    """First digit of a US zip code, or ``'other'`` (Canadian and malformed codes).

    >>> zip_prefix(np.array(["85711", "T8H1N", "0"])).tolist()
    ['8', 'other', '0']
    """
    first = np.array([str(z)[:1] for z in zips], dtype=object)
    return np.where([f.isdigit() for f in first], first, "other").astype(str)
