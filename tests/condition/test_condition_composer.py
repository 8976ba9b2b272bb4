"""The model-input composer produces exactly what an input contract declares, whole image or per box."""

from __future__ import annotations

import numpy as np
import pytest

from edge.condition import ConditionedImage, MissingChannelsError, Modality, compose, from_grey, geometry, region_of
from edge.contracts import Z_SCALE, Channel, InputContract, ResizePolicy
from edge.errors import BundleError, FrameError
from edge.records import BoxXyxy


def _image(h: int = 120, w: int = 200) -> ConditionedImage:
    """Constant planes with distinct values, so each channel's position and scaling is recognisable."""
    pc = np.empty((h, w, 3), np.uint8)
    pc[...] = (200, 100, 50)
    return ConditionedImage(
        Modality.DUAL_ENERGY,
        t_high=np.full((h, w), 0.25, np.float32),
        t_low=np.full((h, w), 0.125, np.float32),
        zeff=np.full((h, w), 15.0, np.float32),
        pc=pc,
    )


def test_channel_groups_in_contract_order() -> None:
    contract = InputContract((Channel.Z, Channel.PC, Channel.HLZ, Channel.L), 32, 48)
    x = compose(_image(), contract)
    assert x.shape == (1, 8, 32, 48) and x.dtype == np.float32 and x.flags.c_contiguous
    expected = [15 / Z_SCALE, 200 / 255, 100 / 255, 50 / 255, 0.25, 0.125, 15 / Z_SCALE, 0.125]
    for c, value in enumerate(expected):
        np.testing.assert_allclose(x[0, c], value, rtol=1e-6, err_msg=f"channel {c}")


def test_normalisation_per_tensor_channel() -> None:
    mean = (0.5, 0.1, 0.2, 0.3)
    std = (0.25, 0.5, 2.0, 4.0)
    x = compose(_image(), InputContract((Channel.H, Channel.PC), 16, 16, mean=mean, std=std))
    raw = [0.25, 200 / 255, 100 / 255, 50 / 255]
    for c in range(4):
        np.testing.assert_allclose(x[0, c], (raw[c] - mean[c]) / std[c], rtol=1e-5)


def test_z_is_clipped_per_source_pixel() -> None:
    img = _image()
    z = np.array(img.zeff)
    z[:, :100] = 60.0  # beyond Z_SCALE: clipped to 1 before resizing, so the average is (1 + 0.5) / 2
    img = ConditionedImage(Modality.DUAL_ENERGY, t_high=img.t_high, t_low=img.t_low, zeff=z, pc=img.pc)
    x = compose(img, InputContract((Channel.Z,), 1, 1))
    assert float(x[0, 0, 0, 0]) == pytest.approx(0.75, abs=1e-5)


def test_stretch_keeps_a_ramp_monotone_and_in_range() -> None:
    h, w = 300, 640
    ramp = np.tile(np.linspace(0.0, 1.0, w, dtype=np.float32), (h, 1))
    img = ConditionedImage(Modality.SINGLE_ENERGY, t_high=ramp)
    for size in ((128, 96), (640, 1280)):  # shrink (area) and enlarge (linear)
        x = compose(img, InputContract((Channel.H,), *size))[0, 0]
        assert np.all(np.diff(x, axis=1) >= -1e-6)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert float(x.mean()) == pytest.approx(float(ramp.mean()), abs=0.01)


def test_letterbox_pads_centred_and_geometry_maps_back() -> None:
    img = from_grey(np.full((100, 200), 51, np.uint8))  # T = 0.2, twice as wide as high
    contract = InputContract((Channel.H,), 64, 64, resize=ResizePolicy.LETTERBOX, pad_value=1.0)
    x = compose(img, contract)[0, 0]
    np.testing.assert_allclose(x[:16], 1.0)
    np.testing.assert_allclose(x[48:], 1.0)
    np.testing.assert_allclose(x[16:48], 0.2, rtol=1e-6)
    g = geometry((0, 0, 200, 100), contract)
    assert (g.pad_x, g.pad_y, g.out_width, g.out_height) == (0, 16, 64, 32)
    assert g.to_image(0, 16) == (0.0, 0.0)
    assert g.to_image(64, 48) == pytest.approx((200.0, 100.0))


def test_boxes_give_one_crop_each_in_order() -> None:
    h, w = 120, 200
    t = np.zeros((h, w), np.float32)
    t[:, :100] = 0.2
    t[:, 100:] = 0.8
    img = ConditionedImage(Modality.SINGLE_ENERGY, t_high=t)
    contract = InputContract((Channel.H,), 8, 8)
    boxes = [BoxXyxy(120, 10, 180, 50), BoxXyxy(10.4, 20.2, 60.7, 90.9)]
    x = compose(img, contract, boxes)
    assert x.shape == (2, 1, 8, 8)
    np.testing.assert_allclose(x[0], 0.8, rtol=1e-6)
    np.testing.assert_allclose(x[1], 0.2, rtol=1e-6)
    as_array = compose(img, contract, np.array([[120, 10, 180, 50], [10.4, 20.2, 60.7, 90.9]]))
    np.testing.assert_array_equal(as_array, x)
    whole = compose(img, contract, [BoxXyxy(0, 0, w, h)])
    np.testing.assert_array_equal(whole, compose(img, contract))
    assert compose(img, contract, []).shape == (0, 1, 8, 8)


def test_box_rounding_and_clipping() -> None:
    assert region_of(BoxXyxy(10.4, 20.6, 30.2, 40.0), 100, 100) == (10, 20, 31, 40)
    assert region_of(BoxXyxy(-5, -5, 500, 500), 100, 200) == (0, 0, 200, 100)
    assert region_of(BoxXyxy(50, 50, 50, 50), 100, 100) == (50, 50, 51, 51)  # degenerate: one pixel
    with pytest.raises(FrameError, match="outside the 200x100 image"):
        region_of(BoxXyxy(250, 10, 300, 20), 100, 200)
    with pytest.raises(FrameError, match="not finite"):
        region_of((0.0, float("nan"), 5.0, 5.0), 100, 100)


def test_missing_channels_are_refused_by_name() -> None:
    colour = ConditionedImage(Modality.PSEUDO_COLOUR, pc=np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(MissingChannelsError) as info:
        compose(colour, InputContract((Channel.PC, Channel.HLZ, Channel.Z), 8, 8, input_name="images"))
    assert isinstance(info.value, BundleError)
    assert info.value.missing == (Channel.HLZ, Channel.Z)
    message = str(info.value)
    assert "'images'" in message and "hlz, z" in message and "pseudo_colour" in message
    assert "available: bgr, pc" in message
    grey = from_grey(np.zeros((10, 10), np.uint8))
    with pytest.raises(MissingChannelsError, match="channel\\(s\\) pc"):
        compose(grey, InputContract((Channel.PC,), 8, 8))


def test_shrinking_is_anti_aliased() -> None:
    """Alternating dark/bright rows (finer than the output grid) must average out, not alias to stripes."""
    stripes = np.zeros((640, 100), np.float32)
    stripes[1::2] = 1.0
    img = ConditionedImage(Modality.SINGLE_ENERGY, t_high=stripes)
    for rows in (160, 200, 75):  # factor 4 (exact), 3.2 and 8.5
        x = compose(img, InputContract((Channel.H,), rows, 50))[0, 0]
        np.testing.assert_allclose(x, 0.5, atol=0.05)
