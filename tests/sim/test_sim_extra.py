"""Without the ``sim`` extra (spekpy, xraydb: about 200 MB the box screening a real scanner does not need), building
the virtual scanner raises SimExtraMissing naming the extra, while importing the package and its light modules
still works. Each case runs in a fresh interpreter in which spekpy and xraydb cannot be imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sim import SimExtraMissing, require_sim_extra

REPO_ROOT = Path(__file__).resolve().parents[2]

_WITHOUT_EXTRA = """
import sys

class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("spekpy", "xraydb"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, _Absent())  # import spekpy fails
importlib.util.find_spec = lambda name, package=None: None if name in ("spekpy", "xraydb") else _find(name, package)
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    prelude = "import importlib.util\n_find = importlib.util.find_spec\n" + _WITHOUT_EXTRA
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=120, check=False)


def test_building_the_scanner_without_the_extra_names_the_extra() -> None:
    done = _run("from sim.physics import DualEnergyScanner\nDualEnergyScanner()\n")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == ("sim.SimExtraMissing: the virtual scanner needs spekpy and xraydb, which this installation "
                    "lacks (the 'sim' extra): pip install 'xray-edge[sim]'"), done.stderr


def test_light_modules_import_without_the_extra() -> None:
    # sim.scene imports sim.physics; neither touches spekpy or xraydb until a scanner is built.
    done = _run("import sim.events, sim.scene, sim.coco, sim.target\nprint('ok')\n")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_with_the_extra_nothing_is_raised() -> None:
    require_sim_extra()  # the test environment installs .[dev], which pulls in the extra
    assert issubclass(SimExtraMissing, ImportError)  # callers that catch ImportError keep working


def test_edge_demo_without_the_extra_says_what_to_install_before_starting_anything(tmp_path: Path) -> None:
    done = _run("from pathlib import Path\nfrom edge_tools.demo import run_demo\n"
                f"raise SystemExit(run_demo(Path({str(tmp_path / 'demo')!r}), 1, 30.0, 0, Path('models')))\n")
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() == ("edge demo: the virtual scanner needs spekpy and xraydb, which this installation "
                                   "lacks (the 'sim' extra): pip install 'xray-edge[sim]'")
    assert not (tmp_path / "demo").exists()  # nothing started, nothing written
