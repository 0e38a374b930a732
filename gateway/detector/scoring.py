"""Turning colour evidence around a candidate into a calibrated score.

What the score means: an estimate of the probability that the candidate is an
eosinophil as a human/reference labeller would mark it, from two measurements taken
with a Gaussian window of sigma = diameter / 4 centred on the candidate:

* ``E``: the weighted fraction of the cell area that is bright orange-red eosin
  cytoplasm (eosinophil granules).  Red blood cells also score here but are smaller
  than the window, so their ``E`` is diluted; pale lilac cytoplasm of other cells
  stays below the eosin threshold.
* ``N``: the weighted fraction that is dark haematoxylin nucleus, capped, because the
  nucleus only has to be *present* (a lymphocyte is mostly nucleus and no eosin).

``evidence = E + NUCLEUS_WEIGHT * min(N, NUCLEUS_CAP)`` and
``score = sigmoid(SLOPE * (evidence - BOUNDARY)) `` rescaled so that ``evidence ==
BOUNDARY`` gives exactly 0.3, the service's default cut: a candidate passes the default
cut when it has either a clear nucleus with some eosin cytoplasm around it, or (rarely,
nucleus out of the focal plane) a very strongly eosinophilic body.  Scores of 0.5 and
above are candidates with clearly more evidence than the boundary needs.  The constants
were set on the development strip and on synthetic slides; see ``docs/detector.md``.
"""

from __future__ import annotations

import numpy as np

SLOPE = 12.0
BOUNDARY = 0.47
NUCLEUS_WEIGHT = 1.2
NUCLEUS_CAP = 0.3
DEFAULT_CUT = 0.3
_OFFSET = float(np.log(DEFAULT_CUT / (1 - DEFAULT_CUT)))  # logit(0.3)


def score(e: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Map the window features ``E`` (eosin) and ``N`` (nucleus) to scores in 0..1."""
    evidence = e + NUCLEUS_WEIGHT * np.minimum(n, NUCLEUS_CAP)
    z = SLOPE * (evidence - BOUNDARY) + _OFFSET
    s = 1.0 / (1.0 + np.exp(-z))
    return s.astype(np.float32)
