"""``edge fit``: refit the PaDiM-style scorer on the box from benign items the service collected on site.

Public surface: :func:`edge_tools.fit.refit.run_fit` with ``FitSettings`` → ``FitResult`` (imported from there, so
that importing the package stays cheap); :class:`FitError` for what the
operator must fix; the numpy Gaussian (:func:`fit_gaussian`), shared with ``export/recipes/padim.py``. Never
imports torch or ``export/``. See docs/fit.md.
"""

from __future__ import annotations

from edge_tools.fit.errors import FitError
from edge_tools.fit.gaussian import GaussianAccumulator, fit_gaussian, mahalanobis_maps

__all__ = ["FitError", "GaussianAccumulator", "fit_gaussian", "mahalanobis_maps"]
