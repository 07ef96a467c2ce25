"""Package boundaries: runtime never imports cli, and the CLI starts without heavy libraries."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("fastapi", "uvicorn", "llama_cpp", "huggingface_hub", "stable_diffusion_cpp", "faster_whisper",
         "onnxruntime", "av", "ctranslate2", "numpy", "gguf", "httpx")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_runtime_never_imports_cli() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "runtime").rglob("*.py"))
        for name in imported_modules(path)
        if name == "cli" or name.startswith("cli.")
    ]
    assert offenders == []


def test_every_package_is_declared() -> None:
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("cli", "runtime")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found - declared == set()


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "--json"]])
def test_cli_starts_without_heavy_imports(args: list[str], tmp_path: Path) -> None:
    report = tmp_path / "modules.json"
    code = (
        "import json, sys\n"
        f"sys.argv = ['stacklet', *{args!r}]\n"
        "from cli.app import main\n"
        "try:\n    main()\n"
        "except SystemExit:\n    pass\n"
        f"open({str(report)!r}, 'w').write(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = {name.split(".")[0] for name in json.loads(report.read_text())}
    assert sorted(loaded & set(HEAVY)) == []
