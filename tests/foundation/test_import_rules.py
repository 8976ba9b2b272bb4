"""Who may import whom: the service (``edge``) loads no tool, and the first-party packages form no cycle.

Two checks, both against the table in docs/architecture.md ("Packages and what each may import"):

- at run time, in a fresh interpreter: importing ``edge.service`` and ``edge.cli`` and running ``edge run --help``
  (the real console entry, under ``-X importtime``) load no ``sim``, ``firmware_bridge.virtual``, ``export``,
  ``edge_tools`` or ``torch`` module;
- statically: every ``import`` statement of every first-party module (top level, inside functions, and under
  ``if TYPE_CHECKING:``) is read with ``ast`` and mapped to its package; the package graph obeys the table and
  has no cycle.

``edge.records`` and ``edge.errors`` are the vocabulary every package shares (the records that cross package
lines, the one ``EdgeError`` root that ``firmware_bridge.FirmwareError`` derives from): they are a node of their
own, which imports no other first-party module at run time. The service names the tools in exactly two tables,
by module name and never by an import statement: ``edge.cli.TOOL_COMMANDS`` (loaded from ``edge_tools.cli`` when
a tool command is invoked) and ``edge.sources.SOURCES`` (``sim.source`` when a config says ``source.type:
sim``); both are checked here too.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("edge", "edge_tools", "calib", "firmware_bridge", "sim", "export", "console")
VOCABULARY = "edge.records+errors"
VOCABULARY_MODULES = frozenset({"edge.records", "edge.errors"})
FORBIDDEN_IN_SERVICE = re.compile(r"^(sim|export|edge_tools|console)(\..*)?$|^firmware_bridge\.virtual$|^torch(\..*)?$")

# The table of docs/architecture.md, as nodes: what each package may import of the others.
ALLOWED: dict[str, frozenset[str]] = {
    VOCABULARY: frozenset(),
    "edge": frozenset({VOCABULARY, "firmware_bridge"}),
    "firmware_bridge": frozenset({VOCABULARY}),
    "sim": frozenset({VOCABULARY, "firmware_bridge"}),
    "calib": frozenset({VOCABULARY, "edge", "sim"}),
    "edge_tools": frozenset({VOCABULARY, "edge", "calib", "sim", "firmware_bridge", "console"}),
    "export": frozenset({VOCABULARY, "edge", "edge_tools", "calib", "sim"}),
    "console": frozenset({VOCABULARY, "edge"}),
}
# The console runs on another machine than the box: of ``edge`` it may use only these (the YAML config loader,
# the shared vocabulary and the payload schemas), never the box's runtime.
CONSOLE_MAY_USE = frozenset({"edge.config.loader", "edge.errors", "edge.records", "edge.schemas",
                             "edge.publish.topics"})
# Annotations may also name what runs above them (never executed, so they make no run-time dependency).
ANNOTATION_ONLY: frozenset[tuple[str, str]] = frozenset({(VOCABULARY, "edge")})


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=180)


def _forbidden(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if FORBIDDEN_IN_SERVICE.match(m))


def test_importing_the_service_loads_no_tool() -> None:
    code = (
        "import json, sys\n"
        "import edge.service, edge.cli, edge.runtime\n"
        "try:\n"
        "    edge.cli.app(['run', '--help'], prog_name='edge')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert "edge.service" in modules and "edge.runtime" in modules
    assert _forbidden(modules) == []


def test_edge_run_help_through_the_console_entry_loads_no_tool() -> None:
    result = _run("-X", "importtime", "-m", "edge", "run", "--help")
    assert result.returncode == 0, result.stderr
    assert "Example: edge run --config" in result.stdout
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert "edge.cli" in imported
    assert _forbidden(imported) == []


def test_edge_help_lists_every_command_with_an_example() -> None:
    result = _run("-X", "importtime", "-m", "edge", "--help")
    assert result.returncode == 0, result.stderr
    from edge.cli import TOOL_COMMANDS

    for name in ("run", "check", "status", "version", *TOOL_COMMANDS):
        assert re.search(rf"^\s*│?\s*{name}\s", result.stdout, re.MULTILINE), (name, result.stdout)
        assert re.search(rf"\bedge {name}\b", result.stdout), (name, "no example")
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert _forbidden(imported) == [], "listing the commands must not import the tools"


def test_tool_table_matches_the_tool_commands() -> None:
    """``edge --help`` shows the table's text without importing the tools: it must be the commands' own."""
    import typer.main

    from edge.cli import TOOL_COMMANDS, TOOLS_MODULE
    from edge_tools import cli as tools_cli

    assert tools_cli.__name__ == TOOLS_MODULE
    group = typer.main.get_group(tools_cli.app)
    assert set(group.commands) == set(TOOL_COMMANDS)
    for name, command in group.commands.items():
        assert " ".join((command.help or "").split("\n\n")[0].split()) == TOOL_COMMANDS[name], name
        sub = getattr(command, "commands", {})
        helps = [command.help or ""] if not sub else [c.help or "" for c in sub.values()]
        assert all("Example" in h for h in helps), (name, "a command without an example")


def test_a_tool_command_runs_through_the_lazy_mount() -> None:
    result = _run("-m", "edge", "sim", "--help")
    assert result.returncode == 0, result.stderr
    assert "generate" in result.stdout and "firmware" in result.stdout


def test_sources_come_from_the_registry() -> None:
    import pytest

    from edge.errors import SourceError
    from edge.sources import SOURCES, open_source

    assert set(SOURCES) == {"spool", "voti", "dicos", "sim"}
    outside = {kind: module for kind, (module, _) in SOURCES.items() if not module.startswith("edge.")}
    assert outside == {"sim": "sim.source"}

    class Unknown:
        type = "simm"

    with pytest.raises(SourceError, match=r"unknown source 'simm' \(did you mean 'sim'\?\)"):
        open_source(Unknown(), "s1", 1.0)


def test_a_sim_source_without_the_simulator_is_a_source_error() -> None:
    """``edge run`` says ``cannot start: <this>`` instead of a traceback on a box installed without the sim extra."""
    code = (
        "import sys, importlib.util\n"
        "_find = importlib.util.find_spec\n"
        "class _Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('spekpy', 'xraydb'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Absent())\n"
        "importlib.util.find_spec = lambda n, p=None: None if n in ('spekpy', 'xraydb') else _find(n, p)\n"
        "from edge.config.source import SimSourceConfig\n"
        "from edge.errors import SourceError\n"
        "from edge.sources import open_source\n"
        "try:\n"
        "    open_source(SimSourceConfig(), 's1', 5.0).close()\n"
        "except SourceError as exc:\n"
        "    print(exc)\n"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("source.type: 'sim': the virtual scanner needs spekpy and xraydb"), result.stdout
    assert "pip install 'xray-edge[sim]'" in result.stdout


# ---- the static graph ----

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


class _Imports(ast.NodeVisitor):
    """Every imported name of one module, with its line and whether it sits under ``if TYPE_CHECKING:``."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.found: list[tuple[str, int, bool]] = []
        self._annotation_depth = 0

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        guarded = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        self._annotation_depth += guarded
        for child in node.body:
            self.visit(child)
        self._annotation_depth -= guarded
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, node.lineno, self._annotation_depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".")
            if not self.is_package:
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
        else:
            target = node.module or ""
        self.found.append((target, node.lineno, self._annotation_depth > 0))
        for alias in node.names:  # `from pkg import module`
            self.found.append((f"{target}.{alias.name}", node.lineno, self._annotation_depth > 0))


def _node(module: str) -> str:
    return VOCABULARY if module in VOCABULARY_MODULES else module.split(".")[0]


def _edges() -> list[tuple[str, str, str, bool]]:
    """(importing module, imported module, 'path:line', annotation only) for every first-party import."""
    modules = _modules()
    edges = []
    for name, path in modules.items():
        visitor = _Imports(name, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for target, line, annotation in visitor.found:
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts:
                edges.append((name, ".".join(parts), f"{path.relative_to(REPO)}:{line}", annotation))
    return edges


def test_package_imports_obey_the_table() -> None:
    wrong = []
    for src, dst, where, annotation in _edges():
        a, b = _node(src), _node(dst)
        if a == b or b in ALLOWED[a] or (annotation and (a, b) in ANNOTATION_ONLY):
            continue
        wrong.append(f"{where}: {src} imports {dst} ({a} may import {sorted(ALLOWED[a]) or 'nothing first-party'})")
    assert wrong == []


def test_console_uses_no_box_runtime() -> None:
    wrong = [f"{where}: {src} imports {dst}" for src, dst, where, _ in _edges()
             if _node(src) == "console" and _node(dst) in ("edge", VOCABULARY) and dst not in CONSOLE_MAY_USE]
    assert wrong == []


def test_package_graph_has_no_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst, _, annotation in _edges():
        if not annotation and _node(src) != _node(dst):
            graph[_node(src)].add(_node(dst))
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path[path.index(nxt):], nxt])
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_service_names_tools_only_in_its_two_tables() -> None:
    """A string naming a tool module inside ``edge`` is a hidden import: only the two registries may hold one."""
    named = re.compile(r"^(sim|export|edge_tools|calib)\.\w+(\.\w+)*$|^firmware_bridge\.virtual$")
    found = []
    for name, path in _modules().items():
        if _node(name) not in ("edge", VOCABULARY):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and named.match(node.value):
                found.append((name, node.value))
    assert sorted(found) == [("edge.cli", "edge_tools.cli"), ("edge.sources", "sim.source")]


def test_architecture_table_is_the_tests_table() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Packages and what each may import", 1)[1].split("\n## ", 1)[0]
    table: dict[str, frozenset[str]] = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        node = cells[0].strip("`").rstrip("/").replace("`, `", "+").replace("edge.records+edge.errors", VOCABULARY)
        names = {VOCABULARY if m in VOCABULARY_MODULES else m.rstrip("/") for m in re.findall(r"`([\w./]+)`", cells[2])}
        table[node] = frozenset(names | ({VOCABULARY} if "edge" in names else set()))  # `edge` includes its vocabulary
    assert table == ALLOWED
