"""Anomaly scorers trained on benign object crops only: a from-scratch backbone and an STFPM student–teacher.

Where it sits: trained here on the object-crop cache (:mod:`export.recipes.simdata`), exported with the
toolchain into ``scorer`` bundles. The teacher is a small CNN trained from scratch to tell benign object
kinds apart (no pretrained weights exist here); the student has the same layout, starts from random weights
and learns to reproduce the teacher's channel-normalised features at three scales on benign crops only
(STFPM, seed 000). Where the student fails, the object is unlike anything benign seen in training.

forward(input (N, 3, 64, 64) hlz, or pc: ``INPUTS``) → anomaly_map (N, 1, 16, 16) raw, score (N,) = max (or
top-k mean) of that map; v2.0 adds the teacher's kind-posterior entropy to every map pixel (see
:class:`StfpmScorer`). The raw scale is mapped by the bundle's ``logistic`` normalisation (threshold → 0.5) in
the runtime, so that the map and the score share one scale and the score stage can localise at the same
threshold.

Must not: see threat crops in training, or be imported by the runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from edge.contracts import Channel, InputContract, ResizePolicy
from export.recipes.simdata import CROP_SIZE, CropSet
from export.recipes.training import atomic_save, freeze_batchnorm, resume

MEAN, STD = 0.5, 0.25
MAP_SIZE = 16
INPUTS = {"hlz": (Channel.HLZ, slice(0, 3)), "pc": (Channel.PC, slice(3, 6))}
"""Crop inputs a scorer can read, with where the crop cache keeps them (it stores hlz then pc, 6 channels).
``hlz`` is the dual-energy reading the reference bundles use; ``pc`` is the pseudo-colour picture seed 000's
models read, for comparing the two inputs (issue 7)."""


def contract(size: int = CROP_SIZE, channels: str = "hlz") -> InputContract:
    """Object crops: ``channels`` (``hlz`` or ``pc``) letterboxed to ``size`` (air padding), normalised
    (x - 0.5) / 0.25."""
    return InputContract(channels=(_input(channels)[0],), height=size, width=size, resize=ResizePolicy.LETTERBOX,
                         mean=(MEAN,) * 3, std=(STD,) * 3)


def _input(channels: str) -> tuple[Channel, slice]:
    if channels not in INPUTS:
        raise ValueError(f"scorer input must be one of {', '.join(INPUTS)}, got {channels!r}")
    return INPUTS[channels]


def channels_of(c: InputContract) -> str:
    """The :data:`INPUTS` name of a scorer bundle's contract (so a re-pack reads the crops its model reads)."""
    for name, (channel, _) in INPUTS.items():
        if c.channels == (channel,):
            return name
    raise ValueError(f"not a crop scorer's input: channels {', '.join(str(ch) for ch in c.channels)}")


def benign_training_mask(c: CropSet) -> NDArray[np.bool_]:
    """Crops usable as benign evidence: not a threat, not hosting or overlapping one."""
    return ~c.threat & ~c.tainted


def crop_inputs(c: CropSet, channels: str = "hlz") -> NDArray[np.float32]:
    """The ``channels`` (``hlz`` or ``pc``) of cached crops, normalised as the contract does."""
    return ((c.crops[:, _input(channels)[1]].astype(np.float32) - MEAN) / STD).astype(np.float32)


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


def distance_maps(t: list[torch.Tensor], s: list[torch.Tensor],
                  weights: tuple[float, ...] | None = None) -> torch.Tensor:
    """Sum over scales of w·0.5·‖t̂ − ŝ‖² (channel-normalised features), at the finest scale: (N, 1, h, w).

    ``weights`` (one per scale, default all 1) lets a scorer leave out a scale whose features do not separate
    (weight 0) without changing the student's training loss.
    """
    size = t[0].shape[-2:]
    w = weights or (1.0,) * len(t)
    total = torch.zeros(t[0].shape[0], 1, *size)
    for ft, fs, wk in zip(t, s, w, strict=True):
        if wk == 0:
            continue
        d = 0.5 * (F.normalize(ft, dim=1) - F.normalize(fs, dim=1)).pow(2).sum(dim=1, keepdim=True)
        total = total + wk * F.interpolate(d, size=size, mode="bilinear", align_corners=False)
    return total


UNCERTAINTIES = ("entropy", "energy")


def kind_uncertainty(logits: torch.Tensor, mode: str) -> torch.Tensor:
    """How unlike every benign kind the teacher finds an object, from its kind logits (N, K) → (N,).

    ``entropy`` of the posterior (v2.0), or the ``energy`` −logsumexp of the logits (Liu et al. 2020, energy-based
    out-of-distribution detection): the posterior's normalisation throws away how strongly the teacher responds at
    all, which is what separates an unknown shape from an ambiguous benign one. On detector crops of sim-test the
    energy term scored object AUROC 0.64 against the entropy's 0.60 (docs/models.md).
    """
    if mode == "energy":
        return -torch.logsumexp(logits, dim=1)
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


class StfpmScorer(nn.Module):
    """Teacher and student together: the exported scorer graph (raw scale).

    score = mean of the ``topk`` largest values of the 16x16 map (``topk`` 1 = its maximum, the v1.0 rule): one
    pixel of a 256-pixel map is noisy, a few pixels' mean is steadier, and the map keeps the same scale.

    ``kind_weight`` > 0 adds the top of the teacher's pyramid: ``kind_weight`` x the entropy of its benign-kind
    posterior, the same for every pixel of the object's map. The student–teacher feature distances are local
    (texture, edges) and a knife's steel looks locally like a phone's; what is unlike any benign object is its
    shape as a whole, which the kind classifier's uncertainty measures (it never saw a threat either). Added to
    the map (not only to the score) so that map and score keep one scale and localisation stays consistent.
    Needs a teacher with its kind head (``Backbone(3, kinds)``).
    """

    def __init__(self, teacher: Backbone, student: Backbone, topk: int = 1,
                 weights: tuple[float, ...] = (1.0, 1.0, 1.0), kind_weight: float = 0.0,
                 uncertainty: str = "entropy") -> None:
        super().__init__()
        if not 1 <= topk <= MAP_SIZE * MAP_SIZE:
            raise ValueError(f"topk must be in 1..{MAP_SIZE * MAP_SIZE}, got {topk}")
        if kind_weight and teacher.fc is None:
            raise ValueError("kind_weight > 0 needs a teacher with its kind classifier head")
        if uncertainty not in UNCERTAINTIES:
            raise ValueError(f"uncertainty must be one of {', '.join(UNCERTAINTIES)}, got {uncertainty!r}")
        self.teacher = teacher
        self.student = student
        self.topk = topk
        self.weights = weights
        self.kind_weight = kind_weight
        self.uncertainty = uncertainty

    def parts(self, input: torch.Tensor, with_kind: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The local student–teacher map (N, 1, 16, 16) and, ``with_kind``, the unweighted kind term (N,)."""
        tf = self.teacher.features(input)
        d = distance_maps(tf, self.student.features(input), self.weights)
        m = F.avg_pool2d(F.adaptive_avg_pool2d(d, MAP_SIZE), 3, 1, 1, count_include_pad=False)
        if not with_kind or self.teacher.fc is None:
            return m, None
        return m, kind_uncertainty(self.teacher.fc(tf[-1].mean(dim=(2, 3))), self.uncertainty)

    def pool(self, m: torch.Tensor) -> torch.Tensor:
        """Object score (N,) of a map: the mean of its ``topk`` largest pixels."""
        flat = m.flatten(1)
        return flat.amax(dim=1) if self.topk == 1 else flat.topk(self.topk, dim=1).values.mean(dim=1)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, term = self.parts(input, bool(self.kind_weight))
        if term is not None:
            m = m + self.kind_weight * term[:, None, None, None]
        return m, self.pool(m)


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Flips and quarter turns (objects lie any way round on the belt) and a little detector noise."""
    if rng.random() < 0.5:
        x = x.flip(-1)
    if rng.random() < 0.5:
        x = x.flip(-2)
    x = torch.rot90(x, int(rng.integers(0, 4)), dims=(-2, -1))
    return x + torch.randn_like(x) * float(rng.uniform(0, 0.03)) / STD


AIR = (1.0 - MEAN) / STD
"""Normalised value of air (transmission 1, and the composer's letterbox padding) in every hlz channel."""


def _augment_box(x: torch.Tensor, rng: np.random.Generator, scale: float = 0.15, shift: float = 0.08
                 ) -> torch.Tensor:
    """Per-crop zoom (1 ± ``scale``) and shift (± ``shift`` of the crop) with air padding, after :func:`_augment`.

    A detector's boxes are loose or tight by this much, so the teacher should not care; intensities (and so the
    z channel's material signal) are left alone.
    """
    x = _augment(x, rng)
    n = x.shape[0]
    s = torch.from_numpy(rng.uniform(1 - scale, 1 + scale, n).astype(np.float32))
    t = torch.from_numpy(rng.uniform(-shift, shift, (n, 2)).astype(np.float32)) * 2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - AIR, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + AIR


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    """Knobs of a backbone + STFPM training run."""

    teacher_steps: int = 1500
    student_steps: int = 2000
    batch: int = 64
    lr: float = 2e-3
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 100
    teacher_init: str = ""
    """A teacher checkpoint whose weights start a new run (its own fresh schedule), used only without ``ckpt``."""
    channels: str = "hlz"
    """The crop input (:data:`INPUTS`) the crops are; stored in the teacher's checkpoint and checked on reuse."""


def load_teacher(ckpt: Path, channels: str | None = None) -> tuple[Backbone, tuple[str, ...]]:
    """The backbone (eval mode) and kind names of a teacher checkpoint, finished or not.

    With ``channels``, refuses a teacher trained on another crop input: hlz and pc crops both have three
    channels, so a pc run would otherwise start from (or finish with) an hlz teacher without a word.
    """
    state = torch.load(ckpt, weights_only=False)
    _check_input(ckpt, state, channels)
    model = Backbone(3, len(state["names"]))
    model.load_state_dict(state["model"])
    return model.eval(), tuple(state["names"])


def _check_input(ckpt: Path, state: dict[str, Any], channels: str | None) -> None:
    # Checkpoints written before 2026-11-24 do not say; all but `train scorer --channels pc` runs of the day
    # before were hlz, so they are taken as hlz and the message says so (set state["channels"] to relabel one).
    trained = str(state.get("channels", "hlz"))
    if channels is not None and trained != channels:
        said = "" if "channels" in state else " (it does not say its input: taken as hlz)"
        raise ValueError(f"{ckpt}: this network was trained on {trained} crops{said}, not {channels} "
                         "(use another checkpoint folder)")


def _load_state(ckpt: Path) -> dict[str, Any]:
    """A teacher or classifier checkpoint as ``{"model": weights, ...}`` (classifier files written before
    2026-11-24 hold the bare weights)."""
    state = torch.load(ckpt, weights_only=False)
    return state if "model" in state else {"model": state}


def check_checkpoint(ckpt: Path, channels: str) -> None:
    """Raise ValueError when ``ckpt`` (a teacher or classifier checkpoint) exists and was trained on another crop
    input, before any training starts (the trainers check too, but a CLI wants to refuse before loading data)."""
    if ckpt.is_file():
        _check_input(ckpt, _load_state(ckpt), channels)


def train_teacher(x: NDArray[np.float32], kinds: NDArray[np.str_], ckpt: Path, cfg: ScorerConfig,
                  progress: Callable[[str], None] = print) -> tuple[Backbone, tuple[str, ...]]:
    """Object-kind classifier on benign crops; returns the backbone (eval mode) and the kind names.

    Resumable: ``ckpt`` holds model, optimiser, schedule and step (saved every ``cfg.checkpoint_every`` steps);
    a finished checkpoint (step = its own total) is loaded as it is, whatever ``cfg`` says, so that the PaDiM
    and classifier recipes can reuse the teacher without its training data.
    """
    state: dict[str, Any] | None = None
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        _check_input(ckpt, state, cfg.channels)
        if "step" not in state or int(state["step"]) >= int(state["total"]):  # v1.0 files: finished, no step
            progress(f"teacher loaded from {ckpt}")
            return load_teacher(ckpt)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    names = tuple(sorted(set(kinds.tolist())))
    model = Backbone(3, len(names))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.teacher_steps + 1)
    step = 0
    if state is not None:
        if tuple(state["names"]) != names:
            raise ValueError(f"{ckpt}: the checkpoint's kinds differ from the training crops' kinds")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = int(state["step"])
        progress(f"teacher resumed at step {step}")
    elif cfg.teacher_init:
        init, init_names = load_teacher(Path(cfg.teacher_init), cfg.channels)
        if init_names != names:
            raise ValueError(f"{cfg.teacher_init}: the initial teacher's kinds differ from the training crops' kinds")
        model.load_state_dict(init.state_dict())
        progress(f"teacher initialised from {cfg.teacher_init}")
    y = torch.as_tensor(np.searchsorted(np.asarray(names), kinds))
    xt = torch.from_numpy(x)
    rng = np.random.default_rng([cfg.seed, step])
    model = model.to(memory_format=torch.channels_last).train()  # type: ignore[call-overload]
    acc = 0.0
    t0 = time.monotonic()
    while step < cfg.teacher_steps:
        idx = torch.as_tensor(rng.integers(0, len(xt), cfg.batch))
        xb = _augment_box(xt[idx], rng).contiguous(memory_format=torch.channels_last)
        logits = model(xb)
        loss = F.cross_entropy(logits, y[idx], label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        acc = 0.98 * acc + 0.02 * float((logits.argmax(1) == y[idx]).float().mean())
        if step % cfg.checkpoint_every == 0 or step == cfg.teacher_steps:
            progress(f"teacher step {step}/{cfg.teacher_steps} loss {loss.item():.3f} acc~{acc:.3f} "
                     f"({time.monotonic() - t0:.0f} s)")
            atomic_save({"model": model.state_dict(), "names": names, "opt": opt.state_dict(),
                   "sched": sched.state_dict(), "step": step, "total": cfg.teacher_steps,
                         "channels": cfg.channels}, ckpt)
    model = model.to(memory_format=torch.contiguous_format).eval()
    return model, names


def train_student(teacher: Backbone, x: NDArray[np.float32], ckpt: Path, cfg: ScorerConfig,
                  progress: Callable[[str], None] = print) -> StfpmScorer:
    """STFPM: the student regresses the teacher's normalised features on benign crops (resumable)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + 1)
    student = Backbone(3, 0)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.student_steps + 1)
    step = resume(ckpt, student, opt, sched, progress)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    xt = torch.from_numpy(x)
    rng = np.random.default_rng([cfg.seed, step])
    student.train()
    t0 = time.monotonic()
    while step < cfg.student_steps:
        idx = torch.as_tensor(rng.integers(0, len(xt), cfg.batch))
        xb = _augment(xt[idx], rng).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            tf = teacher.features(xb)
        loss = distance_maps(tf, student.features(xb)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % cfg.checkpoint_every == 0 or step == cfg.student_steps:
            progress(f"student step {step}/{cfg.student_steps} loss {loss.item():.4f} "
                     f"({time.monotonic() - t0:.0f} s)")
            atomic_save({"model": student.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                   "step": step}, ckpt)
    student.eval()
    return StfpmScorer(teacher, student).eval()


def raw_scores(model: nn.Module, x: NDArray[np.float32], batch: int = 256) -> NDArray[np.float32]:
    """Raw object scores (N,) of a scorer module."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(x[i:i + batch]))[1].numpy())
    return np.concatenate(out).astype(np.float32)


def kind_weight_for(model: StfpmScorer, x: NDArray[np.float32]) -> float:
    """Weight that gives the kind term (``model.uncertainty``) the same benign spread (95th percentile − median)
    as the student–teacher score of ``model`` on benign crops ``x``; multiply by the wanted share."""
    if model.teacher.fc is None:
        raise ValueError("the teacher has no kind classifier head")
    kind_weight, model.kind_weight = model.kind_weight, 0.0
    try:
        local = raw_scores(model, x)
    finally:
        model.kind_weight = kind_weight
    with torch.inference_mode():
        term = torch.cat([kind_uncertainty(model.teacher(torch.from_numpy(x[i:i + 256])), model.uncertainty)
                          for i in range(0, len(x), 256)]).numpy()

    return benign_spread(local) / max(benign_spread(term), 1e-9)


def benign_spread(v: NDArray[np.floating]) -> float:
    """A score's spread on benign crops: 95th percentile − median (robust to the few odd benign crops). Terms
    added to one score are weighed by it, so that each moves benign scores by a chosen share of the other's."""
    return float(np.quantile(v, 0.95) - np.median(v))


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
                     init: Backbone | None = None, progress: Callable[[str], None] = print,
                     frozen_batchnorm: bool = False) -> ThreatClassifier:
    """Class-balanced training (half of each batch threats), optionally from the teacher's weights.

    ``frozen_batchnorm``: batch norms keep their stored statistics (an ``init`` rebuilt from a bundle's ONNX
    weights has its batch norms folded into identity statistics, which batch statistics would overwrite)."""
    model = ThreatClassifier()
    if ckpt.is_file():
        state = _load_state(ckpt)
        _check_input(ckpt, state, cfg.channels)
        model.load_state_dict(state["model"])
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
    if frozen_batchnorm:
        freeze_batchnorm(model)
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
    torch.save({"model": model.state_dict(), "channels": cfg.channels}, ckpt)
    return model
