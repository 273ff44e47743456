"""The coldstart track: neighbor graphs, baselines and AGNN training for warm, ICS and UCS.

- :mod:`recdistill.coldstart.graphs`: per-scenario k-NN neighbor payloads (pickled plain data).
- :mod:`recdistill.coldstart.baselines`: global mean, user/item bias, attribute residual.
- :mod:`recdistill.coldstart.training`: AGNN training with on-device neighbor sampling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # recdistill.arm loads torch; the neighbors stage needs none of it
    from recdistill.arm import Role

RATING_RANGE = (1.0, 5.0)  # every model's predictions are clipped to the rating scale
# role -> the arm's name in metrics/coldstart/ and models/coldstart/: AGNN is the track's trained
# model (role teacher; no student learns from it). The baselines' arms (role baseline) carry
# their own names, global-mean, bias and attribute-residual (coldstart.baselines).
ARMS: dict[Role, str] = {"teacher": "agnn"}
