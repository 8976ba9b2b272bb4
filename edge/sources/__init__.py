"""Frame sources (``edge.ports.FrameSource``), one per ``source.type``: spool directory, VOTI raw files, DICOS DX
files, and the virtual scanner.

The registry :data:`SOURCES` is written out here by hand, like ``edge.backends.BACKENDS``, and names modules, not
classes: a source's module is imported only when the config selects it, and a type the table does not name is
refused (the config schema refuses it first; this is the second line), never taken for another.

``sim`` is the virtual scanner (``sim.source.SimFrameSource``). The service never imports ``sim``: the table
names the module, and it is loaded only when a config says ``source.type: sim`` (``edge demo``, the service and
fault tests, the soak), through the same ``FrameSource`` port a real scanner uses. Why it is not registered by
the tools instead: the tests run the real ``edge run`` process on the virtual scanner, and that process imports
no tool. An install without the simulator's packages gets a ``SourceError`` naming them, not a traceback.
Use::

    source = open_source(cfg.source, cfg.site.scanner_id, cfg.decide.deadline_s)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edge.errors import SourceError

if TYPE_CHECKING:
    from edge.config.source import DicosSourceConfig, SpoolSourceConfig, VotiSourceConfig
    from edge.ports import FrameSource

SOURCES: dict[str, tuple[str, str]] = {
    # source.type: (module, factory called as factory(source_config, scanner_id, deadline_s))
    "spool": (__name__, "spool_source"),
    "voti": (__name__, "voti_source"),
    "dicos": (__name__, "dicos_source"),
    "sim": ("sim.source", "SimFrameSource"),
}


def spool_source(src: SpoolSourceConfig, scanner_id: str, deadline_s: float) -> FrameSource:
    """A spool directory into which vendor software drops finished items."""
    from edge.sources.spool import SpoolSource

    return SpoolSource(src.directory, scanner_id, deadline_s, src.poll_s, src.done_directory, src.limits,
                       done_max_bytes=int(src.done_max_mb * 1024 * 1024))


def voti_source(src: VotiSourceConfig, scanner_id: str, deadline_s: float) -> FrameSource:
    """A directory of VOTI raw line files."""
    from edge.sources.voti import VotiSource

    return VotiSource(src.directory, scanner_id, deadline_s, src.channels, src.header_lines, src.limits)


def dicos_source(src: DicosSourceConfig, scanner_id: str, deadline_s: float) -> FrameSource:
    """A directory of DICOS DX low/high pairs."""
    from edge.sources.dicos import DicosFrameSource

    return DicosFrameSource(src.directory, scanner_id, deadline_s, src.limits)


def open_source(src: Any, scanner_id: str, deadline_s: float) -> FrameSource:
    """The frame source ``src.type`` names in :data:`SOURCES`; ``SourceError`` for a type it does not name or a
    source whose packages this install lacks."""
    kind = str(src.type)
    if kind not in SOURCES:
        import difflib

        close = difflib.get_close_matches(kind, list(SOURCES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SourceError(f"source.type: unknown source {kind!r}{hint}; expected one of {', '.join(SOURCES)}")
    module_name, factory_name = SOURCES[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SourceError(f"source.type: {kind!r} needs {module_name}, which this install cannot import "
                          f"({exc})") from exc
    try:
        source: FrameSource = getattr(module, factory_name)(src, scanner_id, deadline_s)
    except ImportError as exc:  # an optional package found missing only when the source is built (sim.SimExtraMissing)
        raise SourceError(f"source.type: {kind!r}: {exc}") from exc
    return source
