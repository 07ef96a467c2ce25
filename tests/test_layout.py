"""Package boundaries: layers only import downward, no import circles, engine libraries only in the
engines, runtime never imports cli, and the CLI starts without heavy libraries."""

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


# Each layer imports only from its own rank or below (README, "How it is built"). Within a rank, imports
# are allowed as long as they make no circle.
LAYERS = {
    "runtime.errors": 0,
    "runtime.options": 1,
    "runtime.config": 2, "runtime.spec": 2, "runtime.agents": 2, "runtime.protocol": 2, "runtime.http": 2,
    "runtime.media": 2,
    "runtime.engines": 3, "runtime.store": 3,
    "runtime.scheduler": 4, "runtime.worker": 4,
    "runtime.server": 5,
    "runtime.__main__": 6,
    "cli": 7,
}
# Native engine libraries: imported by the engine modules that drive them (PyAV by the media codecs).
ENGINE_LIBRARIES = {"llama_cpp": "runtime/engines/llama/", "stable_diffusion_cpp": "runtime/engines/diffusion.py",
                    "faster_whisper": "runtime/engines/transcribe.py", "ctranslate2": "runtime/engines/transcribe.py",
                    "onnxruntime": "runtime/engines/speech.py", "av": "runtime/media.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    return next(rank for prefix, rank in sorted(LAYERS.items(), key=lambda item: -len(item[0]))
                if module == prefix or module.startswith(prefix + "."))


def product_modules() -> dict[str, Path]:
    return {module_name(path): path for top in ("runtime", "cli") for path in sorted((ROOT / top).rglob("*.py"))}


def project_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, at any depth (`from a import b` counts a.b when b is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found - {module_name(path)}


def test_layers_only_import_downward() -> None:
    modules = product_modules()
    offenders = [f"{name} ({layer(name)}) imports {target} ({layer(target)})"
                 for name, path in modules.items() for target in sorted(project_imports(path, modules))
                 if layer(target) > layer(name)]
    assert offenders == []


def test_no_import_circles() -> None:
    modules = product_modules()
    graph = {name: project_imports(path, modules) for name, path in modules.items()}
    circles: list[str] = []
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        for target in sorted(graph[name]):
            if target in trail:
                circles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in done:
                visit(target, [*trail, target])
        done.add(name)

    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert circles == []


def test_engine_libraries_only_in_their_engines() -> None:
    offenders = []
    for path in sorted((ROOT / "runtime").rglob("*.py")):
        relative = str(path.relative_to(ROOT))
        for name in imported_modules(path):
            home = ENGINE_LIBRARIES.get(name.split(".")[0])
            if home is not None and not relative.startswith(home):
                offenders.append(f"{relative}: {name}")
    assert offenders == []


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
