"""Graphs over users and items: proximity, k-NN neighbor lists and their safe pickle store."""

from recdistill.graph.proximity import Moments, Neighbors, knn_graph, l2_normalize_rows, offdiag_moments
from recdistill.graph.store import RestrictedUnpickler, UnsafePickleError, read_pickle, write_pickle

__all__ = ["Moments", "Neighbors", "RestrictedUnpickler", "UnsafePickleError", "knn_graph",
           "l2_normalize_rows", "offdiag_moments", "read_pickle", "write_pickle"]
