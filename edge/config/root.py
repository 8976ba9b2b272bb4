"""The whole config file: one field per YAML section, plus the cross-section ``check_*`` rules.

Each section is validated by its own module; rules that involve two sections (or two keys whose relation a
single field cannot express) are the named ``check_*`` functions below, run after per-section validation and
reported in the same ``file:line: key: message`` form, naming both keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from edge.config.actions import ActionsConfig
from edge.config.audit import AuditConfig
from edge.config.base import EdgeBaseConfig
from edge.config.camera import CameraConfig
from edge.config.condition import ConditionConfig
from edge.config.decide import DecideConfig
from edge.config.firmware import DEFAULT_ENCODER_COUNTS_PER_MM, LINK_SETTLE_MARGIN_S, FirmwareConfig
from edge.config.loader import Check, Loc, load_yaml_model
from edge.config.localise import LocaliseConfig
from edge.config.logs import LoggingConfig
from edge.config.models import ModelsConfig
from edge.config.mqtt import MqttConfig
from edge.config.service import ServiceConfig
from edge.config.site import SiteConfig
from edge.config.source import SimSourceConfig, SourceConfig
from edge.config.verdicts import VerdictsConfig

DEFAULT_CONFIG_PATH = Path("/etc/edge/edge.yaml")


class EdgeConfig(EdgeBaseConfig):
    """Root of ``edge.yaml``."""

    site: SiteConfig = Field(description="identity of site and scanner")
    source: SourceConfig = Field(default_factory=SimSourceConfig, description="where X-ray items come from")
    firmware: FirmwareConfig | None = Field(None, description="serial link to the scanner; absent = none")
    condition: ConditionConfig = Field(default_factory=ConditionConfig, description="calibrations and palette")
    models: ModelsConfig = Field(description="detector and scorer bundles, backend")
    decide: DecideConfig = Field(default_factory=DecideConfig, description="deadlines and queue bounds")
    localise: LocaliseConfig = Field(default_factory=LocaliseConfig, description="anomalous-part outlines")
    camera: CameraConfig | None = Field(None, description="exit camera; absent = no overlays on camera frames")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="publishing to the control room")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="audit store and retention")
    actions: ActionsConfig | None = Field(None, description="firmware commands (divert, beacon, belt stop); "
                                          "absent = none")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="log level and format")
    service: ServiceConfig = Field(default_factory=ServiceConfig, description="status file, metrics, stop times")
    verdicts: VerdictsConfig = Field(default_factory=VerdictsConfig, description="operator verdicts from the "
                                     "control room (MQTT)")

    @model_validator(mode="before")
    @classmethod
    def _camera_encoder_follows_firmware(cls, data: Any) -> Any:
        """One encoder scale: ``camera.encoder_mm_per_count`` (a deprecated alias) follows
        ``firmware.encoder_counts_per_mm`` unless the file sets it; :func:`check_encoder_scale` refuses the two
        set and disagreeing. Before this, each had its own default (0.8 and 0.1 mm a count), 8x apart, so the
        camera picked frames from the wrong belt travel. A value the firmware section gets wrong is left alone
        for its own validation to report."""
        if not isinstance(data, dict):
            return data
        camera, firmware = data.get("camera"), data.get("firmware")
        if not isinstance(camera, dict) or "encoder_mm_per_count" in camera or not isinstance(firmware, dict):
            return data
        counts = firmware.get("encoder_counts_per_mm", DEFAULT_ENCODER_COUNTS_PER_MM)
        if isinstance(counts, bool) or not isinstance(counts, int | float) or counts <= 0:
            return data
        return {**data, "camera": {**camera, "encoder_mm_per_count": 1.0 / counts}}


def check_reconnect_order(cfg: EdgeConfig) -> list[tuple[Loc, str]]:
    """Backoff bounds must be ordered, for the broker and the serial link alike."""
    out: list[tuple[Loc, str]] = []
    if cfg.mqtt.reconnect_min_s > cfg.mqtt.reconnect_max_s:
        out.append((("mqtt", "reconnect_min_s"),
                    f"{cfg.mqtt.reconnect_min_s} exceeds mqtt.reconnect_max_s ({cfg.mqtt.reconnect_max_s}); "
                    "expected min <= max"))
    if cfg.firmware is not None and cfg.firmware.reconnect_min_s > cfg.firmware.reconnect_max_s:
        out.append((("firmware", "reconnect_min_s"),
                    f"{cfg.firmware.reconnect_min_s} exceeds firmware.reconnect_max_s "
                    f"({cfg.firmware.reconnect_max_s}); expected min <= max"))
    return out


def check_palette_order(cfg: EdgeConfig) -> list[tuple[Loc, str]]:
    """Organic must end before metal begins, or the mixed class is empty and colours lie."""
    palette = cfg.condition.palette
    if palette.organic_max_z >= palette.metal_min_z:
        return [(("condition", "palette", "organic_max_z"),
                 f"{palette.organic_max_z} is not below condition.palette.metal_min_z ({palette.metal_min_z}); "
                 "expected organic_max_z < metal_min_z")]
    return []


def check_link_timeout(cfg: EdgeConfig) -> list[tuple[Loc, str]]:
    """A link timeout shorter than two heartbeats declares a healthy link dead."""
    fw = cfg.firmware
    if fw is not None and fw.link_timeout_s < 2 * fw.heartbeat_s:
        return [(("firmware", "link_timeout_s"),
                 f"{fw.link_timeout_s} is shorter than two firmware.heartbeat_s ({fw.heartbeat_s}); "
                 f"expected at least {2 * fw.heartbeat_s}")]
    return []


def check_command_retry(cfg: EdgeConfig) -> list[tuple[Loc, str]]:
    """A command retried no sooner than it times out is never retried."""
    fw = cfg.firmware
    if fw is not None and fw.command_retry_s >= fw.command_timeout_s:
        return [(("firmware", "command_retry_s"),
                 f"{fw.command_retry_s} is not below firmware.command_timeout_s ({fw.command_timeout_s}); "
                 "expected command_retry_s < command_timeout_s")]
    return []


def check_segment_order(cfg: EdgeConfig) -> list[tuple[Loc, str]]:
    """SLIC's part count is clamped to [min_segments, max_segments]; a reversed range has no answer."""
    loc = cfg.localise
    if loc.min_segments > loc.max_segments:
        return [(("localise", "min_segments"),
                 f"{loc.min_segments} exceeds localise.max_segments ({loc.max_segments}); "
                 "expected min_segments <= max_segments")]
    return []


def check_encoder_scale(cfg: EdgeConfig) -> list[tuple[Loc, str]]:
    """The camera's encoder scale (deprecated key) must be the firmware's: both describe the one belt encoder.

    Without a firmware section there are no belt positions (camera frames carry none), so the camera's value is
    unused and not checked.
    """
    cam, fw = cfg.camera, cfg.firmware
    if cam is None or fw is None:
        return []
    if abs(cam.encoder_mm_per_count * fw.encoder_counts_per_mm - 1.0) <= 1e-6:
        return []
    return [(("camera", "encoder_mm_per_count"),
             f"{cam.encoder_mm_per_count} mm per count disagrees with firmware.encoder_counts_per_mm "
             f"({fw.encoder_counts_per_mm} counts per mm = {1.0 / fw.encoder_counts_per_mm:.6g} mm per count); "
             "camera.encoder_mm_per_count is deprecated: remove it and set firmware.encoder_counts_per_mm "
             f"(here {1.0 / cam.encoder_mm_per_count:.6g} if the camera's value is the right one)")]


def check_deadline_covers_link_settle(cfg: EdgeConfig) -> list[tuple[Loc, str]]:
    """An item's result is held ``firmware.link_timeout_s`` + 0.5 s after its scan (until the link history for
    it is final); a deadline no longer than that makes every item UNSCREENED ``deadline_missed``."""
    fw = cfg.firmware
    if fw is None or cfg.decide.deadline_s > fw.link_settle_s:
        return []
    return [(("decide", "deadline_s"),
             f"{cfg.decide.deadline_s} is not longer than firmware.link_timeout_s ({fw.link_timeout_s}) + "
             f"{LINK_SETTLE_MARGIN_S} s, how long each result is held until the link history is final, so every "
             f"item would miss its deadline; expected more than {fw.link_settle_s:g} (or a shorter "
             "firmware.link_timeout_s)")]


def check_overlay_fits_image_cap(cfg: EdgeConfig) -> list[tuple[Loc, str]]:
    """A camera overlay larger than the MQTT image cap is encoded twice: once to the camera's cap, then again,
    at lower quality, to ``mqtt.image_max_bytes``."""
    cam = cfg.camera
    if cam is None or not cfg.mqtt.enabled or cam.overlay_max_bytes <= cfg.mqtt.image_max_bytes:
        return []
    return [(("camera", "overlay_max_bytes"),
             f"{cam.overlay_max_bytes} exceeds mqtt.image_max_bytes ({cfg.mqtt.image_max_bytes}); expected "
             "overlay_max_bytes <= image_max_bytes (every overlay would be re-encoded to fit the MQTT cap)")]


TOPIC_PREFIX_MAX_BYTES = 184
"""Longest ``mqtt.topic_prefix`` in UTF-8 bytes: ``<prefix>/images/<item id of 64 characters>`` then stays within
256 bytes, the smallest topic limit among common brokers (AWS IoT Core); the default prefix
``xray/<site_id>/<scanner_id>`` is at most 134 bytes."""


def topic_prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot start the box's topic names, or None when it can.

    The box publishes to ``<prefix>/status``, ``<prefix>/items`` and so on, so the prefix must be a valid topic
    name itself (MQTT 5, 4.7): no wildcards ``+``/``#`` (a PUBLISH to a filter is a protocol error: the broker
    drops the connection, and paho refuses it before that), no NUL, and no empty level. A leading ``$`` is the
    brokers' own namespace (``$SYS``) that ``#`` subscribers never see, and a trailing ``/`` would give
    ``prefix//items``.
    """
    valid = "expected levels such as xray/<site>/<scanner>: no '+', '#' or NUL, no empty level, not starting with '$'"
    if not prefix:
        return f"the prefix is empty; {valid}"
    bad = [c for c in ("+", "#") if c in prefix]
    if bad:
        return (f"{prefix!r} contains the wildcard {' and '.join(repr(c) for c in bad)}, which no published topic "
                f"may; {valid}")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in prefix):
        return f"{prefix!r} contains a NUL or control character; {valid}"
    if prefix.startswith("$"):
        return (f"{prefix!r} starts with '$', the broker's own namespace (e.g. $SYS) that '#' subscribers do not "
                f"see; {valid}")
    if prefix.endswith("/"):
        return f"{prefix!r} ends with '/', which would give topics like {prefix + '/items'!r}; drop the trailing '/'"
    if "" in prefix.split("/"):
        return f"{prefix!r} has an empty level ('//' or a leading '/'); {valid}"
    size = len(prefix.encode("utf-8"))
    if size > TOPIC_PREFIX_MAX_BYTES:
        return (f"{size} bytes long; expected at most {TOPIC_PREFIX_MAX_BYTES} bytes (UTF-8) so that every topic "
                "stays within 256 bytes")
    return None


def check_topic_prefix(cfg: EdgeConfig) -> list[tuple[Loc, str]]:
    """A prefix that is not a valid topic name passed validation and then crashed ``edge run`` (issue 29)."""
    prefix = cfg.mqtt.topic_prefix
    problem = None if prefix is None else topic_prefix_problem(prefix)
    return [(("mqtt", "topic_prefix"), problem)] if problem else []


def detector_threat_classes(cfg: EdgeConfig) -> dict[str, float]:
    """The threat classes the detector will alarm on: its bundle's ``threat_classes`` with
    ``models.threat_classes`` merged over them (null removes). A detector bundle that cannot be read counts as
    having none (the bundle check says why it cannot be read; the service could not start on it anyway).

    Reads the detector's ``bundle.yaml`` (only that file): the one rule here that looks at the disk, because
    whether a detector alarms on its own is written in its bundle.
    """
    from edge.bundles.loader import load_bundle
    from edge.errors import EdgeError

    try:
        merged = dict(load_bundle(cfg.models.detector.bundle, verify_hashes=False).manifest.threat_classes)
    except (EdgeError, OSError, ValueError):
        merged = {}
    for name, threshold in cfg.models.threat_classes.items():
        if threshold is None:
            merged.pop(name, None)
        else:
            merged[name] = threshold
    return merged


def check_can_alarm(cfg: EdgeConfig) -> list[tuple[Loc, str]]:
    """A service whose models can never raise an ALARM clears every item without a word.

    The decide stage (``edge.stages.decide``) alarms on three signals: a detection of one of the detector's
    threat classes at its class threshold, the classifier (``models.classifier``) and the anomaly scorer
    (``models.scorer``). With none of them every item is CLEAR. Not part of :data:`CHECKS`: tools that only need
    the detector (and the tests of single stages) still load such a file, but ``edge run`` refuses it and
    ``edge check`` flags it. No opt-out key: no use of the service needs it (``edge fit`` collects benign items
    with the scorer in service, and a survey that publishes CLEAR for every item would be a blind CLEAR).
    """
    m = cfg.models
    if m.scorer is not None or m.classifier is not None or detector_threat_classes(cfg):
        return []
    return [(("models", "scorer"),
             "absent, so no item can ever ALARM: models.classifier is absent too and the detector "
             f"{m.detector.bundle} has no threat class (its bundle.yaml threat_classes, merged with "
             "models.threat_classes, is empty), so every item would be CLEAR; set models.scorer (anomaly scorer, "
             "e.g. /opt/edge/models/scorer-stfpm), models.classifier (e.g. /opt/edge/models/classifier-threat) or "
             "models.threat_classes (detector classes that alarm, e.g. {cutter: 0.5})")]


def check_actions_need_firmware(cfg: EdgeConfig) -> list[tuple[Loc, str]]:
    """Actions are firmware commands: without the serial link they could never be sent (a silent no-op where the
    site expects parcels diverted). A release needs the diverter that holds the parcel."""
    acts = cfg.actions
    if acts is None:
        return []
    out: list[tuple[Loc, str]] = []
    if cfg.firmware is None:
        out.append((("actions",), "set, but there is no firmware section, so no command could ever reach the "
                    "scanner controller; add firmware: (port: ...) or remove actions:"))
    divert = acts.divert
    if divert is not None and divert.eye_to_exit_mm + divert.distance_mm <= divert.arm_mm:
        out.append((("actions", "divert", "arm_mm"), f"{divert.arm_mm:g} mm is not less than eye_to_exit_mm + "
                    f"distance_mm ({divert.eye_to_exit_mm + divert.distance_mm:g} mm): the diverter would have to be "
                    "armed before the parcel reached the photo-eye, so every divert would be missed; check the "
                    "distances measured on the lane"))
    for verdict, action in acts.on_verdict.items():
        if action == "release" and acts.divert is None:
            out.append((("actions", "on_verdict", verdict), "release needs actions.divert (only a diverted parcel "
                        "can be released); configure the diverter or choose another action"))
        if action == "beacon" and acts.beacon is None:
            out.append((("actions", "on_verdict", verdict), "beacon needs actions.beacon (which lamp); "
                        "configure it or choose another action"))
    return out


CHECKS: tuple[Check, ...] = (check_reconnect_order, check_palette_order, check_link_timeout, check_command_retry,
                             check_segment_order, check_topic_prefix, check_encoder_scale,
                             check_deadline_covers_link_settle, check_overlay_fits_image_cap,
                             check_actions_need_firmware)
RUN_CHECKS: tuple[Check, ...] = (check_can_alarm,)
"""Rules only the service needs (``edge run``, flagged by ``edge check``), not every reader of the file."""


def load_config(path: Path) -> EdgeConfig:
    """Load and validate ``path``; raises :class:`edge.errors.ConfigError` listing every problem with lines."""
    return load_yaml_model(path, EdgeConfig, CHECKS)
