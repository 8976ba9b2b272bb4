"""What a SIGHUP reload may change in the running service, and what only a restart can.

A reload reads the config file again and compares it with the config in service, section by section. Changes
to keys listed in ``LIVE`` are applied at once; any other change is refused, and the refusal is said in the log
and in the status ("reload: section 'mqtt' changed and needs a restart; it was not applied") until the file and
the running config agree again (by a restart, or by a later reload of a file that puts the section back). The
service never runs a config other than the one it says it runs: silently ignoring a changed section (as every
section but ``models`` used to be) left a box publishing to the old topics while its file named new ones.

Why the split: the keys applied live are read at each use (log level, health interval, stop and stall times) or
are replaced as a whole under a lock-free swap (the model bundles, loaded and warmed before the swap). The rest
is baked into objects built once at start (the frame source, the pipeline's workers and queue, the firmware
link, the broker connection and its outbox, the audit store, the stages' settings, the calibrations the
conditioner holds), and rebuilding those under a running pipeline would risk the items in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from edge.config import EdgeConfig
from edge.config.models import ModelsConfig

LIVE: dict[str, frozenset[str]] = {
    # Every bundle setting (paths, backend, trusted keys: the bundles are verified and loaded again) but
    # max_objects, which the detect stage holds from start.
    "models": frozenset(ModelsConfig.model_fields) - {"max_objects"},
    "logging": frozenset({"level", "format"}),
    "service": frozenset({"stop_timeout_s", "stall_s"}),
    "mqtt": frozenset({"health_interval_s"}),
}
"""Per section, the keys a reload applies while running; a change to any other key needs a restart."""


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does with a newly read config.

    Attributes:
        config: the config to run from now on: the new file's values where they can be applied live, the
            running ones where they cannot.
        applied: the keys that change (``section.key``), for the log.
        refused: one message per section whose change needs a restart (empty when everything applies).
    """

    config: EdgeConfig
    applied: tuple[str, ...]
    refused: tuple[str, ...]


def _changed_keys(old: BaseModel, new: BaseModel) -> list[str]:
    return [k for k in type(old).model_fields if getattr(old, k) != getattr(new, k)]


def plan_reload(running: EdgeConfig, wanted: EdgeConfig) -> ReloadPlan:
    """Compare the running config with the one read from disk; see the module doc for what applies live."""
    updates: dict[str, object] = {}
    applied: list[str] = []
    refused: list[str] = []
    for section in type(running).model_fields:
        old, new = getattr(running, section), getattr(wanted, section)
        if old == new:
            continue
        if not isinstance(old, BaseModel) or not isinstance(new, BaseModel) or type(old) is not type(new):
            # a section added or removed (firmware, camera), or a source of another type
            refused.append(f"reload: section '{section}' changed and needs a restart; it was not applied")
            continue
        live = LIVE.get(section, frozenset())
        keys = _changed_keys(old, new)
        now = [k for k in keys if k in live]
        later = [k for k in keys if k not in live]
        if now:
            updates[section] = old.model_copy(update={k: getattr(new, k) for k in now})
            applied += [f"{section}.{k}" for k in now]
        if later:
            names = ", ".join(f"{section}.{k}" for k in later)
            done = f"; applied: {', '.join(f'{section}.{k}' for k in now)}" if now else ""
            refused.append(f"reload: section '{section}' changed and needs a restart ({names}); it was not "
                           f"applied{done}")
    return ReloadPlan(running.model_copy(update=updates), tuple(applied), tuple(refused))
