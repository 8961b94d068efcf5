"""The package's rooms: data and models at the bottom, inference above, evaluation above that,
the application layer on top; nothing imports upwards and the package root is the library's face."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bayesrnn"
RANK = {"data": 0, "models": 1, "inference": 2, "evaluation": 3, "app": 4}
ALLOWED_BELOW = {"data": set(), "models": {"data"}}  # models may use data; data uses nothing


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "bayesrnn" or n.startswith("bayesrnn.")}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_no_module_imports_a_room_above_its_own():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        room = _room("bayesrnn." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        if room is None:
            continue
        for target in _imports(path):
            other = _room(target)
            if other is not None and RANK[other] > RANK[room]:
                upward.append(f"{path.relative_to(PACKAGE)} -> {target}")
            if room in ALLOWED_BELOW and other not in (None, room, *ALLOWED_BELOW[room]):
                upward.append(f"{path.relative_to(PACKAGE)} -> {target}")
    assert not upward, upward


def test_the_package_root_holds_only_its_face():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py", "cli.py"]
    face = {"bayesrnn.app.trained_run", "bayesrnn.app.run_draws", "bayesrnn.app"}
    assert _imports(PACKAGE / "__init__.py") <= face


def test_modules_stay_small():
    sizes = {
        str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")
    }
    assert max(sizes.values()) <= 500, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
