"""The public surface of ``edge.condition``: what other stages and ``export/`` may import, and nothing hidden."""

from __future__ import annotations

import importlib

import edge.condition as condition


def test_exported_members() -> None:
    assert sorted(condition.__all__) == sorted([
        "T_FLOOR", "ConditionedImage", "Conditioner", "EnergyCalibration", "FlatField", "FlatFieldCorrector",
        "MissingChannelsError", "Modality", "RCurve", "ResizeGeometry", "ZeffLookup", "compose", "from_grey",
        "from_pseudo_colour", "geometry", "load_energy_calibration", "load_flatfield", "palette_rgb", "region_of",
    ])
    for name in condition.__all__:
        assert getattr(condition, name) is not None
        assert name in (condition.__doc__ or "") or name == "T_FLOOR"


def test_modules_have_docstrings_saying_what_they_must_not_do() -> None:
    for mod in ("calfile", "composer", "conditioner", "degraded", "flatfield", "image", "palette", "zeff"):
        doc = importlib.import_module(f"edge.condition.{mod}").__doc__ or ""
        assert "Where it sits" in doc and "Must not" in doc, mod
