"""The package layout: imports point one way, cli -> tools -> codec -> engine.

engine/ (token ids in, integer frequency tables out) imports nothing of codec/, tools/ or
the command line; codec/ (bytes <-> archive) nothing of tools/ or the command line;
tools/ (measurement) nothing of the command line. The leaf modules errors.py, files.py
and progress.py anyone may import, and they import only each other. codec/ and tools/
may read llmzip.__version__ from the package root.
"""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "llmzip")
LEAVES = {"errors", "files", "progress"}
ALLOWED = {                 # layer -> the layers it may import
    "leaf": {"leaf"},
    "engine": {"engine", "leaf"},
    "codec": {"codec", "engine", "leaf", "root"},
    "tools": {"tools", "codec", "engine", "leaf", "root"},
    "cli": {"cli", "tools", "codec", "engine", "leaf", "root"},
    "root": {"cli", "tools", "codec", "engine", "leaf", "root"},
}


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(ROOT))
                parts = rel[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                out[".".join(parts)] = os.path.join(folder, f)
    return out


MODULES = _modules()


def layer(module: str) -> str | None:
    """The layer of a dotted llmzip module name; None outside llmzip."""
    parts = module.split(".")
    if parts[0] != "llmzip":
        return None
    if len(parts) == 1:
        return "root"
    if parts[1] in ("engine", "codec", "tools"):
        return parts[1]
    if parts[1] in LEAVES:
        return "leaf"
    if parts[1] in ("cli", "__main__"):
        return "cli"
    raise AssertionError(f"{module}: a module outside the layers; add it to test_layout.py")


def imports(module: str, path: str) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every llmzip module that `module` imports,
    anywhere in the file (imports inside functions included)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "llmzip"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                if node.module:
                    base += "." + node.module
            elif node.module and node.module.split(".")[0] == "llmzip":
                base = node.module
            else:
                continue
            for a in node.names:                 # `from . import x`: x may be a module
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if sub in MODULES else base))
    return out


def test_layout_finds_the_layers():
    layers = {layer(m) for m in MODULES}
    assert layers == {"root", "cli", "leaf", "engine", "codec", "tools"}
    assert layer("llmzip.engine.float_engine") == "engine"
    assert ("llmzip.codec.container" in
            {m for _, m in imports("llmzip.codec.api", MODULES["llmzip.codec.api"])})


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_one_way(module):
    own = layer(module)
    bad = [f"line {line}: {target} ({layer(target)})"
           for line, target in sorted(set(imports(module, MODULES[module])))
           if layer(target) not in ALLOWED[own]]
    assert not bad, f"{module} ({own}) may import only {sorted(ALLOWED[own])}: {bad}"


def test_engine_loads_without_codec_tools_or_cli():
    """At run time too: importing every engine module loads nothing above the engine."""
    engine = sorted(m for m in MODULES if layer(m) == "engine")
    code = ("import importlib, sys\n"
            f"for m in {engine!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('llmzip.codec', "
            "'llmzip.tools', 'llmzip.cli'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.abspath(ROOT)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
