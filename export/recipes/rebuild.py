"""A shipped bundle's model as a torch module of its recipe's architecture, rebuilt from the bundle's ONNX weights.

Why: training checkpoints live in /tmp and are gone after a session; the bundles in ``models/`` are what is kept.
Fine-tuning from a shipped detector, or re-packing a shipped scorer with another score rule, starts here. The
rebuild itself is ``benchmarks/eager_pipeline.py``'s (the eager baseline's, checked against ONNX Runtime by
``tests/bench/test_eager_rebuild.py``): batch norms the exporter folded into a convolution come back as identity
batch norms carrying the bias, so a rebuilt model is trained only with frozen batch norms.

Must not: be imported by the runtime.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from torch import nn


def eager_pipeline() -> ModuleType:
    """``benchmarks/eager_pipeline.py`` as a module (the benchmarks are scripts, not a package). Raises
    FileNotFoundError outside a repository checkout."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "eager_pipeline.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: needed to rebuild a model from a bundle (run from the repository)")
    spec = importlib.util.spec_from_file_location("_xray_eager_pipeline", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def torch_from_bundle(bundle_dir: Path) -> nn.Module:
    """The bundle's model, rebuilt (eval mode). Raises FileNotFoundError outside a repository checkout."""
    from edge.bundles import load_bundle

    model: nn.Module = eager_pipeline().torch_model(load_bundle(bundle_dir))
    return model.eval()
