"""The image-quality gate (``edge.condition.quality``) and the condition stage that applies it.

Real virtual-scanner items flat-fielded with their own scanner's dark/air references: normal items pass (the
50-item version of ``benchmarks/bench_quality_gate.py``), and each fault of issue 29 point 5 is caught with its
reason. The 50 items take about 15 s to render, so they are rendered once per module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calib.flatfield import ReferenceLines, compute_flatfield
from edge.condition import Conditioner, FlatFieldCorrector
from edge.condition.quality import QualityGate
from edge.config.condition import QualityConfig
from edge.errors import ItemFailed
from edge.records import ItemMeta, RawItem, UnscreenedReason
from edge.stages.condition import ConditionStage
from sim.dataset import ItemStream
from sim.physics import RawScan

NORMAL_ITEMS = 50


class Scanner:
    """Raw items of one virtual scanner and the flat-field corrector made from its own references."""

    def __init__(self) -> None:
        self.stream = ItemStream(seed=3, threat_rate=0.5)
        self.flatfield = compute_flatfield(ReferenceLines(self.stream.dark.low, self.stream.dark.high),
                                           ReferenceLines(self.stream.air.low, self.stream.air.high), "test")
        self.corrector = FlatFieldCorrector(self.flatfield)
        self.items = [self.stream.item(i).raw for i in range(NORMAL_ITEMS)]

    def judge(self, low: np.ndarray, high: np.ndarray, cfg: QualityConfig | None = None) -> UnscreenedReason | None:
        t_low, t_high = self.corrector.apply(low, 0), self.corrector.apply(high, 1)
        finding = QualityGate(cfg or QualityConfig()).inspect_dual(low, high, t_low, t_high)
        return None if finding is None else finding.reason

    def dark_frame(self, lines: int, rng: np.random.Generator) -> RawScan:
        """What the detector reads with the X-ray off: its dark level per channel, plus read noise."""
        return self.stream.scanner.dark_lines(lines, rng)


@pytest.fixture(scope="module")
def sim() -> Scanner:
    return Scanner()


def test_normal_items_pass_the_gate(sim: Scanner) -> None:
    findings = [(i, sim.judge(raw.low, raw.high)) for i, raw in enumerate(sim.items)]
    assert [f for f in findings if f[1] is not None] == []


def test_dark_level_and_all_zero_frames_are_no_xray(sim: Scanner) -> None:
    dark = sim.dark_frame(500, np.random.default_rng(1))
    assert sim.judge(dark.low, dark.high) is UnscreenedReason.NO_XRAY
    zeros = np.zeros((500, 640), np.uint16)
    assert sim.judge(zeros, zeros) is UnscreenedReason.NO_XRAY
    raw = sim.items[0]
    assert sim.judge(np.zeros_like(raw.low), raw.high) is UnscreenedReason.NO_XRAY  # low-energy layer sent nothing
    dark_low = sim.dark_frame(raw.low.shape[0], np.random.default_rng(3)).low
    assert sim.judge(dark_low, raw.high) is UnscreenedReason.NO_XRAY  # low-energy layer at its dark level


def test_saturated_frames_are_saturated(sim: Scanner) -> None:
    full = np.full((500, 640), 65535, np.uint16)
    assert sim.judge(full, full) is UnscreenedReason.SATURATED
    raw = sim.items[0]
    high = raw.high.copy()
    high[: high.shape[0] // 10] = 65535  # a tenth of the item at full scale
    assert sim.judge(raw.low, high) is UnscreenedReason.SATURATED


def test_lines_zeroed_or_dark_are_lines_missing(sim: Scanner) -> None:
    raw = next(r for r in sim.items if r.high.shape[0] > 400)
    low, high = raw.low.copy(), raw.high.copy()
    low[100:300] = 0
    high[100:300] = 0
    assert sim.judge(low, high) is UnscreenedReason.LINES_MISSING
    low, high = raw.low.copy(), raw.high.copy()
    dark = sim.dark_frame(20, np.random.default_rng(2))
    low[50:70], high[50:70] = dark.low, dark.high  # a 20-line dropout at the dark level (beam interrupted)
    assert sim.judge(low, high) is UnscreenedReason.LINES_MISSING
    low, high = raw.low.copy(), raw.high.copy()
    high[10] = 0  # one line in several hundred: within the default allowance
    assert sim.judge(low, high) is None
    assert sim.judge(low, high, QualityConfig(max_missing_line_fraction=0.0)) is UnscreenedReason.LINES_MISSING


def test_dead_or_stuck_channels_are_dead_columns(sim: Scanner) -> None:
    raw = sim.items[1]
    low, high = raw.low.copy(), raw.high.copy()
    high[:, 100:120] = 0
    assert sim.judge(low, high) is UnscreenedReason.DEAD_COLUMNS
    low, high = raw.low.copy(), raw.high.copy()
    low[:, 300:310] = 20_000  # stuck channels: one value along the whole item
    assert sim.judge(low, high) is UnscreenedReason.DEAD_COLUMNS
    low, high = raw.low.copy(), raw.high.copy()
    high[:, 5] = 0  # one dead channel of 640: within the default allowance
    assert sim.judge(low, high) is None


def test_disabled_gate_finds_nothing(sim: Scanner) -> None:
    zeros = np.zeros((50, 640), np.uint16)
    assert sim.judge(zeros, zeros, QualityConfig(enabled=False)) is None


def test_degraded_images_all_black_or_all_white() -> None:
    gate = QualityGate(QualityConfig())
    black = np.zeros((200, 300, 3), np.uint8)
    white = np.full((200, 300, 3), 255, np.uint8)
    finding = gate.inspect_image(black)
    assert finding is not None and finding.reason is UnscreenedReason.NO_XRAY
    finding = gate.inspect_image(white)
    assert finding is not None and finding.reason is UnscreenedReason.SATURATED
    grey = np.full((200, 300), 65535, np.uint16)
    finding = gate.inspect_image(grey)
    assert finding is not None and finding.reason is UnscreenedReason.SATURATED
    scene = white.copy()
    scene[50:150, 60:240] = (240, 140, 40)  # an orange (organic) object on air
    assert gate.inspect_image(scene) is None
    scene[20:30] = 0  # ten rows black across the image: a dropout
    finding = gate.inspect_image(scene)
    assert finding is not None and finding.reason is UnscreenedReason.LINES_MISSING


def _meta() -> ItemMeta:
    return ItemMeta("lane1-1", "lane1", 1, 0.0, 0.0, 0.0, 0.0, 10.0)


def test_condition_stage_raises_item_failed_with_the_reason(sim: Scanner, conditioner: Conditioner) -> None:
    stage = ConditionStage(Conditioner(sim.flatfield, conditioner.lookup.calibration, conditioner.palette))
    raw = sim.items[2]
    done = stage(RawItem(meta=_meta(), high=raw.high, low=raw.low))
    assert done.image.shape == raw.high.shape
    zeros = np.zeros_like(raw.high)
    with pytest.raises(ItemFailed) as caught:
        stage(RawItem(meta=_meta(), high=zeros, low=zeros))
    assert caught.value.reason is UnscreenedReason.NO_XRAY and "image quality" in caught.value.detail
    with pytest.raises(ItemFailed) as caught:
        stage(RawItem(meta=_meta(), image=np.zeros((64, 64, 3), np.uint8)))
    assert caught.value.reason is UnscreenedReason.NO_XRAY


def test_conditioning_in_strips_equals_conditioning_at_once(sim: Scanner, conditioner: Conditioner,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Long items are conditioned in strips of belt lines (memory, and OpenCV's 32,767-row remap limit); the
    strips must not change a pixel."""
    from edge.condition import conditioner as conditioner_module

    cond = Conditioner(sim.flatfield, conditioner.lookup.calibration, conditioner.palette)
    raw = sim.items[3]
    whole = cond.condition(raw.low, raw.high)
    monkeypatch.setattr(conditioner_module, "STRIP_LINES", 97)
    strips = cond.condition(raw.low, raw.high)
    for name in ("t_high", "t_low", "zeff", "pc"):
        assert np.array_equal(getattr(whole, name), getattr(strips, name)), name


def test_quality_and_bounds_config_errors_name_file_line_and_key(tmp_path: Path) -> None:
    from edge.config import load_config
    from edge.errors import ConfigError

    path = tmp_path / "edge.yaml"
    path.write_text("site:\n  site_id: hub\n  scanner_id: lane-1\nmodels:\n  detector: /opt/edge/models/det\n"
                    "source:\n  type: spool\n  directory: /var/spool/edge\n  max_lines: 1\n"
                    "condition:\n  quality:\n    max_saturated_fraction: 1.5\n    dark_level: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        # Inside the ``source:`` union the key's own line (the loader passes over the union's tag ``spool``; it
        # used to give the section's line, 6).
        f"{path}:9: source.spool.max_lines: input should be greater than or equal to 2, got 1",
        f"{path}:12: condition.quality.max_saturated_fraction: must be 0.0..1.0, got 1.5",
        f"{path}:13: condition.quality.dark_level: unknown key 'dark_level' (did you mean 'degraded_black_level'?); "
        "valid keys: dark_transmission, degraded_black_level, degraded_white_level, enabled, full_scale_counts, "
        "max_dead_column_fraction, max_missing_line_fraction, max_saturated_fraction, min_lit_fraction",
    ]
    ok = tmp_path / "ok.yaml"
    ok.write_text("site:\n  site_id: hub\n  scanner_id: lane-1\nmodels:\n  detector: /opt/edge/models/det\n"
                  "source:\n  type: spool\n  directory: /var/spool/edge\n  max_lines: 30000\n", encoding="utf-8")
    cfg = load_config(ok)
    assert cfg.source.type == "spool" and cfg.source.limits.max_lines == 30000
    assert cfg.condition.quality.min_lit_fraction == 0.05


def test_channels_the_flatfield_knows_are_dead_are_not_counted(sim: Scanner, conditioner: Conditioner) -> None:
    """A diode dead at commissioning (air = dark in the references) reads a constant along every item; the
    flat-field fills it from a neighbour, so the gate must not count it even with no allowance at all."""
    dark, air = sim.stream.dark, sim.stream.air
    air_low, air_high = air.low.copy(), air.high.copy()
    air_low[:, 7], air_high[:, 7] = dark.low[:, 7], dark.high[:, 7]
    flatfield = compute_flatfield(ReferenceLines(dark.low, dark.high), ReferenceLines(air_low, air_high), "dead 7")
    assert flatfield.dead == (7,)
    raw = sim.items[4]
    low, high = raw.low.copy(), raw.high.copy()
    low[:, 7], high[:, 7] = 300, 300  # stuck at its dark level
    strict = QualityConfig(max_dead_column_fraction=0.0)
    stage = ConditionStage(Conditioner(flatfield, conditioner.lookup.calibration, conditioner.palette),
                           quality=strict)
    stage(RawItem(meta=_meta(), high=high, low=low))  # passes: channel 7 is known
    high = high.copy()  # (a RawItem makes its arrays read-only)
    high[:, 8] = 300  # a channel that died since commissioning is still found
    with pytest.raises(ItemFailed) as caught:
        stage(RawItem(meta=_meta(), high=high, low=low))
    assert caught.value.reason is UnscreenedReason.DEAD_COLUMNS and "[8]" in caught.value.detail
