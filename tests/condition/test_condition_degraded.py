"""Degraded modalities on real third-party images: SIXray/OPIXray pseudo-colour and GDXray single-energy grey."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.condition import MissingChannelsError, Modality, compose, from_grey, from_pseudo_colour
from edge.contracts import Channel, InputContract
from edge.errors import FrameError
from edge.records import BoxXyxy

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "xray"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"third-party images not present at {path}")
    return path


@pytest.mark.parametrize("folder", ["sixray/images", "opixray"])
def test_pseudo_colour_images_give_pc_only(folder: str) -> None:
    files = sorted(_need(REALDATA / folder).glob("*.jpg"))[:3]
    assert files
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        img = from_pseudo_colour(bgr, order="bgr")
        assert img.modality is Modality.PSEUDO_COLOUR
        assert img.available == frozenset({Channel.PC, Channel.BGR})  # bgr: pc in OpenCV order
        np.testing.assert_array_equal(img.pc, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        h, w = img.shape
        x = compose(img, InputContract((Channel.PC,), 96, 96), [BoxXyxy(0, 0, w / 2, h / 2)])
        assert x.shape == (1, 3, 96, 96) and x.min() >= 0.0 and x.max() <= 1.0
        with pytest.raises(MissingChannelsError, match="z"):
            compose(img, InputContract((Channel.Z,), 96, 96))


def test_single_energy_grey_gives_h_only() -> None:
    files = sorted(_need(REALDATA / "gdxray" / "images").glob("*.png"))[:3]
    assert files
    for f in files:
        grey = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        img = from_grey(grey)
        assert img.modality is Modality.SINGLE_ENERGY
        assert img.available == frozenset({Channel.H})
        assert img.t_high is not None
        assert float(img.t_high.mean()) == pytest.approx(float(grey.mean()) / 255.0, abs=1e-3)
        x = compose(img, InputContract((Channel.H,), 64, 64))
        assert x.shape == (1, 1, 64, 64)
        for needs in ((Channel.PC,), (Channel.HLZ,), (Channel.L,)):
            with pytest.raises(MissingChannelsError):
                compose(img, InputContract(needs, 64, 64))


def test_grey_and_colour_inputs_are_checked() -> None:
    grey3 = np.repeat(np.arange(12, dtype=np.uint8).reshape(3, 4, 1), 3, axis=2)
    assert from_grey(grey3).shape == (3, 4)
    t = from_grey(np.array([[0, 65535]], np.uint16)).t_high
    assert t is not None and float(t[0, 1]) == 1.0 and float(t[0, 0]) > 0.0
    inverted = from_grey(np.array([[0, 255]], np.uint8), bright_is_air=False).t_high
    assert inverted is not None and float(inverted[0, 0]) == 1.0
    colour = grey3.copy()
    colour[0, 0, 1] = 99
    with pytest.raises(FrameError, match="use from_pseudo_colour"):
        from_grey(colour)
    with pytest.raises(FrameError, match="uint8 or uint16"):
        from_grey(np.zeros((4, 4), np.float32))  # type: ignore[arg-type]
    with pytest.raises(FrameError, match=r"\(H, W, 3\) uint8"):
        from_pseudo_colour(np.zeros((4, 4), np.uint8))
    with pytest.raises(FrameError, match="channel order"):
        from_pseudo_colour(np.zeros((4, 4, 3), np.uint8), order="hsv")
