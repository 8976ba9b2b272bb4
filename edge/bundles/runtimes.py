"""Which inference-library versions a bundle's parity was proven on, and whether this box runs one of them.

Where it sits: read by :mod:`edge.screening` when it opens a bundle on a backend, written into a manifest's
``toolchain`` by the export toolchain (``export.versions``). The parity report (``edge-export verify``) proves
that the exported model gives the same answers on the OpenVINO / ONNX Runtime installed at export time; a newer
release may change kernels (OpenVINO's CPU plugin and INT8 paths do between minor releases), so a box running
another release screens with answers nobody checked. The service then says so: its models report ``degraded``
(or, with ``models.require_tested_runtime``, it refuses that backend).

The tested range of a library is ``toolchain["<library>.tested"]`` when the bundle records one (``>=A.B,<C.D``,
what export writes: the release series of the version it verified on), otherwise the release series of
``toolchain["<library>"]`` (bundles exported before the range was recorded). Patch releases count as tested;
another minor or major release does not. Must not: import the inference libraries (versions come from package
metadata), or touch files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Final

RUNTIME_LIBRARIES: Final = ("openvino", "onnxruntime")
"""The inference libraries behind the backends; a backend's name is its library's distribution name."""
TESTED_SUFFIX: Final = ".tested"
"""``toolchain`` key suffix of a library's tested range, e.g. ``openvino.tested: '>=2026.4,<2026.5'``."""

_RANGE: Final = re.compile(r"^\s*>=\s*([0-9][0-9.]*)\s*,\s*<\s*([0-9][0-9.]*)\s*$")


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``2026.4.1`` and ``2026.4.1-16000-abc`` give (2026, 4, 1),
    ``2.13.0+cpu`` gives (2, 13, 0). Raises ValueError when it does not start with a number."""
    match = re.match(r"^\s*(\d+(?:\.\d+)*)", version)
    if match is None:
        raise ValueError(f"{version!r} is not a version")
    return tuple(int(part) for part in match.group(1).split("."))


def _padded(v: tuple[int, ...], n: int) -> tuple[int, ...]:
    return v + (0,) * (n - len(v))


@dataclass(frozen=True, slots=True)
class VersionRange:
    """Releases from ``lower`` (inclusive) to ``upper`` (exclusive); ``text`` is how the bundle writes it."""

    lower: tuple[int, ...]
    upper: tuple[int, ...]

    @property
    def text(self) -> str:
        return f">={'.'.join(map(str, self.lower))},<{'.'.join(map(str, self.upper))}"

    def __contains__(self, version: object) -> bool:
        if not isinstance(version, str):
            return False
        v = release(version)
        n = max(len(v), len(self.lower), len(self.upper))
        return _padded(self.lower, n) <= _padded(v, n) < _padded(self.upper, n)


def series_range(version: str) -> VersionRange:
    """The release series of ``version``: 2026.4.1 → ``>=2026.4,<2026.5``; 1.32.0 → ``>=1.32,<1.33``."""
    v = _padded(release(version), 2)
    return VersionRange((v[0], v[1]), (v[0], v[1] + 1))


def parse_range(text: str) -> VersionRange:
    """``>=A.B,<C.D`` → VersionRange. Raises ValueError on anything else (or an empty range)."""
    match = _RANGE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a version range; expected '>=A.B,<C.D'")
    lower, upper = release(match.group(1)), release(match.group(2))
    n = max(len(lower), len(upper))
    if _padded(lower, n) >= _padded(upper, n):
        raise ValueError(f"{text!r} is an empty version range")
    return VersionRange(lower, upper)


def tested_range(toolchain: Mapping[str, str], library: str) -> VersionRange | None:
    """The range of ``library`` a bundle's parity was proven on, or None when its toolchain records neither a range
    nor a version of it. Raises ValueError on an unreadable record."""
    explicit = toolchain.get(library + TESTED_SUFFIX)
    if explicit:
        return parse_range(explicit)
    recorded = toolchain.get(library)
    return series_range(recorded) if recorded else None


def tested_ranges(versions: Mapping[str, str]) -> dict[str, str]:
    """The ``<library>.tested`` entries export records beside the versions it verified with (``toolchain``)."""
    return {lib + TESTED_SUFFIX: series_range(versions[lib]).text for lib in RUNTIME_LIBRARIES if lib in versions}


def installed_version(library: str) -> str | None:
    """The installed version of ``library`` from package metadata (no import), or None when it is not installed."""
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return None


def untested_runtime(bundle_name: str, toolchain: Mapping[str, str], library: str,
                     installed: str | None) -> str | None:
    """Why ``bundle_name`` would run on an ``installed`` ``library`` its parity was not proven on, or None when the
    version lies in the bundle's tested range (or is unknown: the backend then fails to load on its own)."""
    if installed is None:
        return None
    try:
        tested = tested_range(toolchain, library)
    except ValueError as exc:
        return (f"{bundle_name}: toolchain.{library}{TESTED_SUFFIX} is unreadable ({exc}), so {library} "
                f"{installed} is untested")
    if tested is None:
        return (f"{bundle_name} records no {library} version its parity was proven on; this box runs {library} "
                f"{installed}")
    try:
        inside = installed in tested
    except ValueError:
        inside = False
    if inside:
        return None
    return (f"{bundle_name} runs on {library} {installed}, outside the versions its parity was proven on "
            f"({tested.text}): re-verify it on this version (edge-export verify) or install a tested {library}")
