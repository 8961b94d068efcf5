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
    names = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert names == ["__init__.py", "__main__.py", "cli.py", "version.py"]
    face = {
        "bayesrnn.app.trained_run",
        "bayesrnn.app.run_draws",
        "bayesrnn.app",
        "bayesrnn.version",
    }
    assert _imports(PACKAGE / "__init__.py") <= face
    assert not _imports(PACKAGE / "version.py")


def test_no_room_imports_the_package_root():
    upward = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.parent != PACKAGE and "bayesrnn" in _imports(path)
    ]
    assert not upward, upward


# The inference room's sub-rooms, bottom to top: how a model runs over data, the ELBO's terms
# (and NUTS beside them), the guides, prediction with a trained posterior, training.
INFERENCE_RANK = {"runtime": 0, "estimators": 1, "mcmc": 1, "guides": 2, "prediction": 3}
INFERENCE_RANK["training"] = 4


def _inference_room(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["bayesrnn", "inference"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] in INFERENCE_RANK else None


def test_inference_sub_rooms_import_only_downwards():
    rooms = {p.name for p in (PACKAGE / "inference").iterdir() if (p / "__init__.py").exists()}
    assert rooms == set(INFERENCE_RANK) - {"mcmc"}
    loose = {p.name for p in (PACKAGE / "inference").glob("*.py")}
    assert loose == {"__init__.py", "mcmc.py"}
    upward = []
    for path in (PACKAGE / "inference").rglob("*.py"):
        module = "bayesrnn." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        room = _inference_room(module)
        if room is None:
            continue
        for target in _imports(path):
            other = _inference_room(target)
            if target == "bayesrnn.inference" or (
                other is not None and INFERENCE_RANK[other] > INFERENCE_RANK[room]
            ):
                upward.append(f"{path.relative_to(PACKAGE)} -> {target}")
    assert not upward, upward


def test_modules_stay_small():
    sizes = {
        str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")
    }
    assert max(sizes.values()) <= 500, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
