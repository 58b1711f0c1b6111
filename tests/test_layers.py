"""The layering of docs/architecture.md, checked on every import in the package (module level and inside
functions alike): `cli -> runtime -> {policies, hardware, envs} -> {model, datasets, sim}`.

A rule broken here is a design change: move the shared code down a floor (as `vla.sim` holds what the sim envs and
the virtual arm's twin share) or pass the object in from above, rather than adding an exception.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vla"

# package -> names its modules may not import (a name forbids itself and its submodules)
FORBIDDEN = {
    "vla.model": ["lerobot", "mujoco", "serial", "gymnasium", "lerobot_policy_vla", "vla.datasets", "vla.policies",
                  "vla.envs", "vla.sim", "vla.hardware", "vla.runtime"],
    "vla.hardware": ["torch", "vla.model", "vla.policies", "vla.envs", "vla.runtime", "vla.datasets"],
    "vla.sim": ["torch", "gymnasium", "lerobot", "lerobot_policy_vla", "vla.model", "vla.datasets", "vla.policies",
                "vla.envs", "vla.hardware", "vla.runtime"],
    "vla.envs": ["lerobot_policy_vla", "vla.policies", "vla.hardware", "vla.runtime"],
    "vla.datasets": ["lerobot_policy_vla", "vla.policies", "vla.envs", "vla.sim", "vla.hardware", "vla.runtime"],
    "vla.policies": ["vla.envs", "vla.sim", "vla.hardware", "vla.runtime"],
}
MUJOCO_GATE = "vla.sim.gl"  # picks the OpenGL backend before MuJoCo loads: the only module that imports mujoco


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement in the file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


SOURCES = sorted(ROOT.rglob("*.py"))


def test_the_package_is_found() -> None:
    assert len(SOURCES) > 50 and any(module_name(p) == "vla.model.vla" for p in SOURCES)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_crosses_a_layer(package: str) -> None:
    broken = [
        f"{path.relative_to(ROOT.parent)}:{line} imports {name}"
        for path in SOURCES if within(module_name(path), package)
        for line, name in imports(path)
        if any(within(name, banned) for banned in FORBIDDEN[package])
    ]  # fmt: skip
    assert not broken, f"{package} must not import these:\n" + "\n".join(broken)


def test_mujoco_is_imported_only_through_the_gl_gate() -> None:
    broken = [
        f"{path.relative_to(ROOT.parent)}:{line}"
        for path in SOURCES if module_name(path) != MUJOCO_GATE
        for line, name in imports(path) if within(name, "mujoco")
    ]  # fmt: skip
    assert not broken, "import MuJoCo as `from vla.sim.gl import mujoco`, not directly:\n" + "\n".join(broken)


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from vla.envs.registry import make_so101\n    import mujoco\n")
    assert imports(source) == [(2, "vla.envs.registry"), (3, "mujoco")]
