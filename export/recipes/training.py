"""Resumable training plumbing shared by the recipes: checkpoints that survive a kill, resume, one optimiser step.

A checkpoint holds model, optimiser, schedule and step, so a run stopped anywhere (a session ends, the machine is
shared) continues with the same command. Must not: be imported by the runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


def atomic_save(state: dict[str, object], ckpt: Path) -> None:
    """``torch.save`` to a temporary name, then rename: a kill mid-write never leaves half a checkpoint."""
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, ckpt.with_suffix(".tmp"))
    ckpt.with_suffix(".tmp").replace(ckpt)


def resume(ckpt: Path, model: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
           progress: Callable[[str], None]) -> int:
    """Load model, optimiser and schedule from ``ckpt`` when it exists; the step to continue from (0 if new)."""
    if not ckpt.is_file():
        return 0
    state = torch.load(ckpt, weights_only=False)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    step = int(state["step"])
    progress(f"resumed {ckpt} at step {step}")
    return step


def optimise(model: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
             total: torch.Tensor, parts: dict[str, float], run: dict[str, float]) -> None:
    """One optimiser step (gradients clipped at norm 10) and the running means of the logged loss parts."""
    opt.zero_grad()
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    opt.step()
    sched.step()
    for k, v in parts.items():
        run[k] = 0.9 * run.get(k, v) + 0.1 * v


def save_checkpoint(ckpt: Path, model: nn.Module, opt: torch.optim.Optimizer,
                    sched: torch.optim.lr_scheduler.LRScheduler, step: int, cfg: object, **extra: object) -> None:
    """Everything a resumed run needs, written to a temporary name and renamed (never a half checkpoint)."""
    atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                 "step": step, "config": cfg, **extra}, ckpt)


def load_eval(model: nn.Module, weights: Path | None) -> nn.Module:
    """``model`` with the weights of a checkpoint (or a bare state dict) loaded, in eval mode."""
    if weights is not None:
        state = torch.load(weights, weights_only=False)
        model.load_state_dict(state.get("model", state))
    return model.eval()


def freeze_batchnorm(model: nn.Module) -> None:
    """Batch norms use their stored statistics while training (their affine parameters still learn).

    Needed after a rebuild from ONNX (folded batch norms have identity statistics) and sensible at batch 8.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


class StepLog:
    """The end of each training step: the progress line every ``every`` steps (running losses, seconds per step,
    ETA to ``last``, the pause step or the end) and whether a checkpoint is due (every ``checkpoint_every`` steps,
    and at ``last``)."""

    def __init__(self, start_step: int, last: int, total: int, progress: Callable[[str], None],
                 checkpoint_every: int, every: int = 20) -> None:
        self._start, self._last, self._total, self._every = start_step, last, total, every
        self._progress, self._checkpoint_every = progress, checkpoint_every
        self._t0 = self._t_start = time.monotonic()

    def line(self, step: int, run: dict[str, float], head: str) -> str | None:
        """``head`` + the figures when ``step`` is due (every ``every`` steps, and the last), else None."""
        if step % self._every and step != self._total:
            return None
        rate = (time.monotonic() - self._t0) / self._every
        self._t0 = time.monotonic()
        eta = (time.monotonic() - self._t_start) / max(step - self._start, 1) * (self._last - step)
        return (f"{head} " + " ".join(f"{k} {v:.3f}" for k, v in run.items())
                + f" ({rate:.2f} s/step, eta {eta / 60:.0f} min)")

    def done(self, step: int, run: dict[str, float], head: str) -> bool:
        """Report step ``step`` when due; True when its checkpoint is due."""
        line = self.line(step, run, head)
        if line is not None:
            self._progress(line)
        return step % self._checkpoint_every == 0 or step == self._last
