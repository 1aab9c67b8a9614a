"""The helpers package's layout: what the README's "Layout" section names exists, and the layers hold (the world and
model at the bottom, the algorithms above them, the course machinery and the benchmark on top)."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "helpers"

# the modules on top, and who may import them: the command line, the benchmark, and the package face (``checks``)
TOP = ("helpers.bench", "helpers.assignments", "helpers.cli")
MAY_IMPORT_TOP = ("helpers.bench", "helpers.assignments", "helpers.cli", "helpers.__main__", "helpers")
# training code: what an algorithm runs to change a model; it may sample, never import evaluation or the benchmark
TRAINING = ("helpers.pretrain", "helpers.sft", "helpers.reward", "helpers.ppo", "helpers.dpo", "helpers.sampling",
            "helpers.optimal", "helpers.grpo", "helpers.verifiable")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every helpers module that ``path`` imports, at the top or inside a function, as absolute names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}  # `from . import bench` names a module
    return {m for m in found if m == "helpers" or m.startswith("helpers.")}


MODULES = {module_name(p): p for p in sorted(HELPERS.rglob("*.py"))}


def _within(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_import_scan_sees_relative_lazy_and_from_imports(tmp_path):
    """The scanner the layer tests rely on, on a module written for it (so a blind scanner cannot pass them)."""
    fake = HELPERS / "labeling" / "storage.py"
    found = imported_modules(fake)
    assert "helpers.world" in found
    found = imported_modules(HELPERS / "rlhf.py")
    assert {"helpers.ppo", "helpers.sampling", "helpers.evaluate"} <= found
    found = imported_modules(HELPERS / "cli.py")   # imports inside functions count
    assert {"helpers.bench", "helpers.assignments.grading", "helpers.pretrain"} <= found


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not _within(m, MAY_IMPORT_TOP[:4])
                                          and m != "helpers"))
def test_no_algorithm_or_world_module_imports_the_benchmark_the_cli_or_the_course_machinery(module):
    bad = sorted(m for m in imported_modules(MODULES[module]) if _within(m, TOP))
    assert not bad, f"{module} imports {bad}: only the CLI, bench and the package's `checks` name may"


def test_the_package_face_imports_the_course_machinery_only_for_checks():
    found = imported_modules(MODULES["helpers"])
    assert {m for m in found if _within(m, TOP)} == {"helpers.assignments", "helpers.assignments.checks"}


@pytest.mark.parametrize("module", TRAINING)
def test_training_code_never_imports_evaluation_or_the_benchmark(module):
    bad = sorted(m for m in imported_modules(MODULES[module]) if _within(m, ("helpers.evaluate",) + TOP))
    assert not bad, f"{module} imports {bad}"


def test_nothing_imports_the_command_line():
    importers = sorted(m for m, p in MODULES.items()
                       if m not in ("helpers.cli", "helpers.__main__") and "helpers.cli" in imported_modules(p))
    assert importers == []


def _fresh_import(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_the_labeling_package_face_does_not_import_ipywidgets_until_the_view_is_used(tmp_path):
    out = _fresh_import(
        "import sys; from helpers import labeling; print('ipywidgets' in sys.modules); "
        f"session = labeling.LabelingSession([labeling.Item('p', 'x', 'y')], {str(tmp_path)!r}, 'a'); "
        "labeling.LabelingWidget(session); print('ipywidgets' in sys.modules)")
    assert out.split() == ["False", "True"]


def test_ppo_pieces_import_without_the_rlhf_loop_and_checks_stay_reachable():
    out = _fresh_import("import sys; from helpers import ppo; print('helpers.rlhf' in sys.modules); "
                        "from helpers import checks; print(callable(checks.check_gae))")
    assert out.split() == ["False", "True"]


def test_grpo_imports_neither_the_rlhf_loop_nor_evaluation():
    out = _fresh_import("import sys; from helpers import grpo; "
                        "print('helpers.rlhf' in sys.modules, 'helpers.evaluate' in sys.modules)")
    assert out.split() == ["False", "False"]


def _readme_layout_paths() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    paths = []
    for line in block.splitlines():
        if m := re.match(r"^(\S+/)\s", line):            # top-level folders
            paths.append(m.group(1))
        for name in re.findall(r"(?:^|\s|,)([a-z_]+(?:\.py|/))(?=[\s,(]|$)", line):
            paths.append(name)
    return paths


def test_every_path_the_readme_layout_names_exists():
    paths = _readme_layout_paths()
    assert len(paths) >= 25, paths   # the block was read
    missing = []
    for name in paths:
        candidates = [ROOT / name, HELPERS / name, HELPERS / "assignments" / name]
        if not any(c.exists() for c in candidates):
            missing.append(name)
    assert missing == []


def test_every_helpers_module_is_named_in_the_readme_layout():
    named = set(_readme_layout_paths())
    top_level = {p.name for p in HELPERS.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    folders = {p.name + "/" for p in HELPERS.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert sorted(top_level - named) == [] and sorted(folders - named) == []
