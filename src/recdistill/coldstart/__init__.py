"""The coldstart track: neighbor graphs, baselines and AGNN training for warm, ICS and UCS.

- :mod:`recdistill.coldstart.graphs`: per-scenario k-NN neighbor payloads (pickled plain data).
- :mod:`recdistill.coldstart.baselines`: global mean, user/item bias, attribute residual.
- :mod:`recdistill.coldstart.training`: AGNN training with on-device neighbor sampling.
"""

RATING_RANGE = (1.0, 5.0)  # every model's predictions are clipped to the rating scale
