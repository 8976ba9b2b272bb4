"""Anomaly scorers trained on benign object crops only: a from-scratch backbone and an STFPM student–teacher.

Where it sits: trained here on the object-crop cache (:mod:`export.recipes.simdata`), exported with the
toolchain into ``scorer`` bundles. The teacher is a small CNN trained from scratch to tell benign object
kinds apart (no pretrained weights exist here); the student has the same layout, starts from random weights
and learns to reproduce the teacher's channel-normalised features at three scales on benign crops only
(STFPM, seed 000). Where the student fails, the object is unlike anything benign seen in training.

forward(input (N, 3, 64, 64) hlz) → anomaly_map (N, 1, 16, 16) raw, score (N,) = max of that map. The raw
scale is mapped by the bundle's ``centred`` normalisation (threshold → 0.5) in the runtime, so that the map
and the score share one scale and the score stage can localise at the same threshold.

Must not: see threat crops in training, or be imported by the runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from edge.contracts import Channel, InputContract, ResizePolicy
from export.recipes.simdata import CROP_SIZE, CropSet

MEAN, STD = 0.5, 0.25
MAP_SIZE = 16


def contract(size: int = CROP_SIZE) -> InputContract:
    """Object crops: ``hlz`` letterboxed to ``size`` (air padding), normalised (x - 0.5) / 0.25."""
    return InputContract(channels=(Channel.HLZ,), height=size, width=size, resize=ResizePolicy.LETTERBOX,
                         mean=(MEAN,) * 3, std=(STD,) * 3)


def benign_training_mask(c: CropSet) -> NDArray[np.bool_]:
    """Crops usable as benign evidence: not a threat, not hosting or overlapping one."""
    return ~c.threat & ~c.tainted


def crop_inputs(c: CropSet) -> NDArray[np.float32]:
    """The hlz channels of cached crops, normalised as the contract does."""
    return ((c.crops[:, :3].astype(np.float32) - MEAN) / STD).astype(np.float32)


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Backbone(nn.Module):
    """Three stages at 1/2, 1/4, 1/8 of the input (32, 64, 128 channels), plus an optional kind classifier."""

    def __init__(self, in_channels: int = 3, num_classes: int = 0) -> None:
        super().__init__()
        self.s1 = nn.Sequential(_cbr(in_channels, 32), _cbr(32, 32, 2), _cbr(32, 32))
        self.s2 = nn.Sequential(_cbr(32, 64, 2), _cbr(64, 64))
        self.s3 = nn.Sequential(_cbr(64, 128, 2), _cbr(128, 128))
        self.fc = nn.Linear(128, num_classes) if num_classes else None

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.s1(x)
        f2 = self.s2(f1)
        f3 = self.s3(f2)
        return [f1, f2, f3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc is None:
            raise RuntimeError("this backbone has no classifier head")
        return self.fc(self.features(x)[-1].mean(dim=(2, 3)))


def distance_maps(t: list[torch.Tensor], s: list[torch.Tensor]) -> torch.Tensor:
    """Sum over scales of 0.5·‖t̂ − ŝ‖² (channel-normalised features), at the finest scale: (N, 1, h, w)."""
    size = t[0].shape[-2:]
    total = torch.zeros(t[0].shape[0], 1, *size)
    for ft, fs in zip(t, s, strict=True):
        d = 0.5 * (F.normalize(ft, dim=1) - F.normalize(fs, dim=1)).pow(2).sum(dim=1, keepdim=True)
        total = total + F.interpolate(d, size=size, mode="bilinear", align_corners=False)
    return total


class StfpmScorer(nn.Module):
    """Teacher and student together: the exported scorer graph (raw scale)."""

    def __init__(self, teacher: Backbone, student: Backbone) -> None:
        super().__init__()
        self.teacher = teacher
        self.student = student

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = distance_maps(self.teacher.features(input), self.student.features(input))
        m = F.avg_pool2d(F.adaptive_avg_pool2d(d, MAP_SIZE), 3, 1, 1, count_include_pad=False)
        return m, m.flatten(1).amax(dim=1)


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Flips and quarter turns (objects lie any way round on the belt) and a little detector noise."""
    if rng.random() < 0.5:
        x = x.flip(-1)
    if rng.random() < 0.5:
        x = x.flip(-2)
    x = torch.rot90(x, int(rng.integers(0, 4)), dims=(-2, -1))
    return x + torch.randn_like(x) * float(rng.uniform(0, 0.03)) / STD


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    """Knobs of a backbone + STFPM training run."""

    teacher_steps: int = 1500
    student_steps: int = 2000
    batch: int = 64
    lr: float = 2e-3
    seed: int = 0
    threads: int = 1


def train_teacher(x: NDArray[np.float32], kinds: NDArray[np.str_], ckpt: Path, cfg: ScorerConfig,
                  progress: Callable[[str], None] = print) -> tuple[Backbone, tuple[str, ...]]:
    """Object-kind classifier on benign crops; returns the backbone (eval mode) and the kind names."""
    names = tuple(sorted(set(kinds.tolist())))
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model = Backbone(3, len(state["names"]))
        model.load_state_dict(state["model"])
        progress(f"teacher loaded from {ckpt}")
        return model.eval(), tuple(state["names"])
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    y = torch.as_tensor(np.searchsorted(np.asarray(names), kinds))
    xt = torch.from_numpy(x)
    model = Backbone(3, len(names))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.teacher_steps + 1)
    rng = np.random.default_rng(cfg.seed)
    model.train()
    acc = 0.0
    t0 = time.monotonic()
    for step in range(1, cfg.teacher_steps + 1):
        idx = torch.as_tensor(rng.integers(0, len(xt), cfg.batch))
        logits = model(_augment(xt[idx], rng))
        loss = F.cross_entropy(logits, y[idx], label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        acc = 0.95 * acc + 0.05 * float((logits.argmax(1) == y[idx]).float().mean())
        if step % 100 == 0:
            progress(f"teacher step {step}/{cfg.teacher_steps} loss {loss.item():.3f} acc~{acc:.3f} "
                     f"({time.monotonic() - t0:.0f} s)")
    model.eval()
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "names": names}, ckpt)
    return model, names


def train_student(teacher: Backbone, x: NDArray[np.float32], ckpt: Path, cfg: ScorerConfig,
                  progress: Callable[[str], None] = print) -> StfpmScorer:
    """STFPM: the student regresses the teacher's normalised features on benign crops (resumable)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + 1)
    student = Backbone(3, 0)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.student_steps + 1)
    step = 0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        student.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = int(state["step"])
        progress(f"student resumed at step {step}")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    xt = torch.from_numpy(x)
    rng = np.random.default_rng([cfg.seed, step])
    student.train()
    t0 = time.monotonic()
    while step < cfg.student_steps:
        idx = torch.as_tensor(rng.integers(0, len(xt), cfg.batch))
        xb = _augment(xt[idx], rng)
        with torch.no_grad():
            tf = teacher.features(xb)
        loss = distance_maps(tf, student.features(xb)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % 100 == 0 or step == cfg.student_steps:
            progress(f"student step {step}/{cfg.student_steps} loss {loss.item():.4f} "
                     f"({time.monotonic() - t0:.0f} s)")
            torch.save({"model": student.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step}, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)
    student.eval()
    return StfpmScorer(teacher, student).eval()


def raw_scores(model: nn.Module, x: NDArray[np.float32], batch: int = 256) -> NDArray[np.float32]:
    """Raw object scores (N,) of a scorer module."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(x[i:i + batch]))[1].numpy())
    return np.concatenate(out).astype(np.float32)


def build_stfpm(weights: Path | None = None) -> StfpmScorer:
    """Factory for ``edge-export --factory export.recipes.scorer:build_stfpm --weights W`` (eval mode)."""
    teacher, student = Backbone(3, 0), Backbone(3, 0)
    model = StfpmScorer(teacher, student)
    if weights is not None:
        model.load_state_dict(torch.load(weights, weights_only=False), strict=False)
    return model.eval()


class ThreatClassifier(nn.Module):
    """Supervised benign/anomaly object classifier (seed 001's second stage): probs (N, 2) = (benign, anomaly)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = Backbone(3, 2)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(input), dim=1)


def train_classifier(x: NDArray[np.float32], threat: NDArray[np.bool_], ckpt: Path, cfg: ScorerConfig,
                     init: Backbone | None = None, progress: Callable[[str], None] = print) -> ThreatClassifier:
    """Class-balanced training (half of each batch threats), optionally from the teacher's weights."""
    model = ThreatClassifier()
    if ckpt.is_file():
        model.load_state_dict(torch.load(ckpt, weights_only=False))
        progress(f"classifier loaded from {ckpt}")
        return model.eval()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + 2)
    if init is not None:
        state = {k: v for k, v in init.state_dict().items() if not k.startswith("fc.")}
        model.net.load_state_dict(state, strict=False)
    xt = torch.from_numpy(x)
    pos, neg = np.flatnonzero(threat), np.flatnonzero(~threat)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.teacher_steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps + 1)
    rng = np.random.default_rng(cfg.seed + 2)
    model.train()
    t0 = time.monotonic()
    half = cfg.batch // 2
    for step in range(1, steps + 1):
        idx = np.concatenate([rng.choice(pos, half), rng.choice(neg, cfg.batch - half)])
        y = torch.as_tensor(np.r_[np.ones(half), np.zeros(cfg.batch - half)].astype(np.int64))
        logits = model.net(_augment(xt[torch.as_tensor(idx)], rng))
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            progress(f"classifier step {step}/{steps} loss {loss.item():.3f} ({time.monotonic() - t0:.0f} s)")
    model.eval()
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), ckpt)
    return model
