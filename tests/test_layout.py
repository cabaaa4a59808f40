"""The layout's rules that import-linter (`make lint`) does not cover: what serving loads, what the Feast repo
imports, and the size of product modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_PACKAGES = ("pantry", "streaming", "serving", "training")
MAX_MODULE_LINES = 450


def test_serving_loads_no_fitting_library_and_no_training_code():
    """`import serving.app` (what every serving worker does first) brings in no pandas, scipy, lightgbm, training,
    nor Feast's SDK (which imports pandas: serving imports it only when it reads the registry at startup)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import serving.app"], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    loaded = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    top = {name.split(".")[0] for name in loaded}
    assert "serving" in top and "pantry" in top  # the check itself sees imports
    assert not top & {"pandas", "scipy", "lightgbm", "sklearn", "training", "feast"}, top & {
        "pandas", "scipy", "lightgbm", "sklearn", "training", "feast"}


def test_the_feast_repo_imports_only_feast_and_pantry_settings():
    """feature_repo/ is loaded by Feast by path (its modules import each other as top-level names), so
    import-linter cannot check it: its dependencies point one way too (feature_repo -> pantry)."""
    repo = ROOT / "feature_repo"
    siblings = {p.stem for p in repo.glob("*.py")}
    for path in repo.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                top = name.split(".")[0]
                assert top in {"feast", "datetime", "__future__"} | siblings or name == "pantry.settings", \
                    f"{path.name} imports {name}"


def test_no_product_module_is_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for pkg in PRODUCT_PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long
