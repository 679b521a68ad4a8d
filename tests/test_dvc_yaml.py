"""dvc.yaml declares, for every stage, each library module its script imports."""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def gradsort_imports(path: Path) -> set[str]:
    """The gradsort modules ``path`` imports anywhere in its body, and theirs, transitively."""
    found, todo = set(), [path]
    # importing any gradsort module runs the package's __init__ first
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] != "gradsort":
                    continue
                modules = ["__init__"] + parts[1:2]
                if name == "gradsort" or isinstance(node, ast.ImportFrom) and len(parts) == 1:
                    modules += [alias.name for alias in node.names]
                for module in (f"src/gradsort/{m}.py" for m in modules):
                    if module not in found and (ROOT / module).is_file():
                        found.add(module)
                        todo.append(ROOT / module)
    return found


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_declares_every_module_it_imports(stage):
    spec = STAGES[stage].get("do", STAGES[stage])
    script = f"stages/{stage}.py"
    deps = {d for d in spec["deps"] if isinstance(d, str)}
    assert script in deps
    code = {d for d in deps if d.startswith("src/gradsort/")}
    assert code == gradsort_imports(ROOT / script)
