"""The virtual dual-energy X-ray scanner: physics, scenes, threats, ground truth, events and datasets.

Modules (bottom up): ``physics`` (materials, spectrum, sandwich detector, raw counts), ``shapes`` (thickness-map
primitives), ``objects`` / ``threats`` (libraries), ``scene`` (items and ground truth), ``wedge`` (step-wedge
calibration object), ``preview`` (simple pseudo-colour), ``coco``, ``events`` (belt/item/frame timeline),
``dataset`` (writing a dataset), ``cli`` (``edge sim …``), ``gallery`` (docs figure); ``camera`` and ``target``
(exit camera and cross-modal calibration target). See docs/sim.md.

Importing the package does nothing: no I/O, no heavy imports. The runtime never imports torch from here.
The physics needs spekpy and xraydb, the ``sim`` extra (``pip install 'xray-edge[sim]'``), which the box screening
a real scanner is installed without: :func:`require_sim_extra` says so by name where they are first needed.
"""

from __future__ import annotations

import importlib.util
from functools import cache

SIM_EXTRA = "pip install 'xray-edge[sim]'"
"""What installs the virtual scanner's physics packages (the ``sim`` extra of pyproject.toml)."""


class SimExtraMissing(ImportError):
    """The virtual scanner's physics packages (spekpy, xraydb: the ``sim`` extra) are not installed.

    The box that screens a real scanner is installed without them; only the virtual scanner needs them.
    """


@cache
def require_sim_extra() -> None:
    """Raise :class:`SimExtraMissing`, naming what is missing and how to install it, unless spekpy and xraydb are
    importable.

    Called where the physics first needs them (``sim.physics``) and by the commands built on the virtual scanner
    (``edge demo``) before they start anything, so that a box installed without the extra says what to install
    instead of failing deep inside with ``No module named 'spekpy'``. Looks the packages up without importing them.
    """
    missing = [name for name in ("spekpy", "xraydb") if importlib.util.find_spec(name) is None]
    if missing:
        raise SimExtraMissing(f"the virtual scanner needs {' and '.join(missing)}, which this installation lacks "
                              f"(the 'sim' extra): {SIM_EXTRA}")
