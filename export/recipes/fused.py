"""One scorer graph carrying two benign-only networks: the STFPM student–teacher and an insert classifier.

Why: the runtime runs one scorer per object, and the two benign-only signals we have see different things. The
STFPM scorer's strongest term is its teacher's uncertainty about the benign kind (an unfamiliar *shape*); the
synthetic-insert classifier (:mod:`export.recipes.synthetic`, ``train classifier`` on that cache) has learnt
"unexpected dense metal" laid over a benign object. Their item rankings correlate at only about 0.3, so a fusion
might rank items better than either; fusing inside one graph keeps the runtime, the bundle format, thresholds
and localisation exactly as they are for any scorer. Measured (docs/models.md, "Synthetic metal inserts"): +0.05
AUROC_M on one validation scanner, −0.02 pooled over three others and −0.01 on the benchmark, so no fused
bundle ships; the tool stays for better insert classifiers (compare with ``python -m edge_tools.eval.validation``).

Rules (``rule``), both on the STFPM raw scale and per object, so the map keeps one scale with the score (score =
top-k mean of the map) and the STFPM map still outlines sub-components:

- ``max`` (default): ``map = max(stfpm_map, i)`` with ``i = m_s + (o − m_o) · share · spread_s / spread_o``, the
  insert log-odds ``o`` (logit(anomaly) − logit(benign): unbounded like the STFPM scale, so a sure insert is not
  clipped) mapped so that on benign validation crops its median and spread (95th percentile − median) are the
  STFPM score's (share 1). An object is as anomalous as the more alarmed of the two networks, so an item is
  flagged when either finds something (on the seed-103 validation scanner: AUROC_M 0.75 against 0.74 for the
  sum).
- ``sum``: ``map = stfpm_map + w · o`` with ``w`` giving ``o`` ``share`` x the STFPM score's benign spread (the
  STFPM kind term's scaling).

The kind term's weight and the insert term's weight and offset are buffers: the exported graph keeps them as named
initialisers, so a rebuild from the bundle (benchmarks/eager_pipeline.py) reads them back.

Must not: see threat crops (both networks are trained on benign crops only), or be imported by the runtime.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from export.recipes.scorer import StfpmScorer, ThreatClassifier, benign_spread, raw_scores

RULES = ("max", "sum")


class FusedScorer(nn.Module):
    """An STFPM scorer's map (with its kind term) fused with an insert classifier's log-odds by ``rule``."""

    kind_weight: torch.Tensor
    insert_weight: torch.Tensor
    insert_offset: torch.Tensor

    def __init__(self, stfpm: StfpmScorer, insert: ThreatClassifier, insert_weight: float = 0.0,
                 insert_offset: float = 0.0, rule: str = "max") -> None:
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        self.stfpm = stfpm
        self.insert = insert
        self.rule = rule
        self.register_buffer("kind_weight", torch.tensor(float(stfpm.kind_weight)))
        self.register_buffer("insert_weight", torch.tensor(float(insert_weight)))
        self.register_buffer("insert_offset", torch.tensor(float(insert_offset)))

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, kind = self.stfpm.parts(input, True)
        if kind is not None:
            m = m + self.kind_weight * kind[:, None, None, None]
        term = (self.insert_offset + self.insert_weight * log_odds(self.insert, input))[:, None, None, None]
        m = torch.maximum(m, term) if self.rule == "max" else m + term
        return m, self.stfpm.pool(m)


def log_odds(classifier: ThreatClassifier, x: torch.Tensor) -> torch.Tensor:
    """Anomaly log-odds (N,) of a two-class classifier: logit(anomaly) − logit(benign)."""
    logits = classifier.net(x)
    return logits[:, 1] - logits[:, 0]


def fuse(stfpm: StfpmScorer, insert: ThreatClassifier, benign: NDArray[np.float32], share: float,
         rule: str = "max") -> FusedScorer:
    """The fused scorer with the insert term scaled on benign validation crops ``benign`` (see the module doc)."""
    if share < 0:
        raise ValueError(f"share must be >= 0, got {share}")
    if rule not in RULES:  # before the crops are scored, not after
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    with torch.inference_mode():
        odds = torch.cat([log_odds(insert, torch.from_numpy(benign[i:i + 256]))
                          for i in range(0, len(benign), 256)]).numpy()
    scores = raw_scores(stfpm, benign)
    weight = share * benign_spread(scores) / max(benign_spread(odds), 1e-9)
    offset = float(np.median(scores) - weight * np.median(odds)) if rule == "max" else 0.0
    return FusedScorer(stfpm, insert, weight, offset, rule).eval()
