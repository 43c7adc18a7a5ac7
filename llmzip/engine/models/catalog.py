"""Which models llmzip can find, and user-registered names (`--model auto`, which picks
among them, is the codec's: codec/api.choose_auto).

Users register a GGUF file under a name with `llmzip models add NAME PATH`; the names
live in $LLMZIP_HOME/models.json (default ~/.config/llmzip/models.json) and resolve like
the packaged ones.
"""

from __future__ import annotations

import json
import os

from ...errors import ModelError, UsageError


def _user_file() -> str:
    home = os.environ.get("LLMZIP_HOME", os.path.join(os.path.expanduser("~"), ".config",
                                                      "llmzip"))
    return os.path.join(home, "models.json")


def user_models() -> dict[str, str]:
    try:
        with open(_user_file()) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read the model registry {_user_file()}: {e}") from None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_user_models(models: dict) -> None:
    path = _user_file()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(models, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def register(name: str, path: str) -> dict:
    """Register a GGUF file under `name` (checked: it must load as a supported model)."""
    from .gguf_loader import read_gguf
    from .registry import PACKAGED
    if name in PACKAGED or name == "auto" or not name or os.sep in name:
        raise UsageError(f"cannot use {name!r} as a model name")
    path = os.path.abspath(path)
    read_gguf(path, weights=False)          # raises a clear error if unusable
    models = user_models()
    models[name] = path
    _write_user_models(models)
    return describe_file(name, path, "registered")


def unregister(name: str) -> None:
    models = user_models()
    if name not in models:
        raise UsageError(f"no registered model named {name!r}")
    del models[name]
    _write_user_models(models)


def describe_file(name: str, path: str, where: str) -> dict:
    from .gguf_loader import read_gguf
    c = read_gguf(path, weights=False)
    return {"name": name, "arch": c.arch, "params": c.config.n_params(),
            "vocab": c.config.vocab_size, "context": c.config.context_length,
            "file_bytes": os.path.getsize(path),
            "quantisation": ",".join(f"{k}x{v}" for k, v in sorted(c.quant_types.items())),
            "license": c.license, "where": where, "path": path, "status": "ok"}


def list_models() -> list[dict]:
    """Every model llmzip knows of, installed or not (status says which)."""
    from .registry import PACKAGED, packaged_path
    rows = []
    for name, entry in PACKAGED.items():
        where = "PyPI " + (entry[0] if isinstance(entry, tuple) else
                           "+".join(d for d, _ in entry.parts))
        try:
            rows.append(describe_file(name, packaged_path(name), where))
        except ModelError as e:
            rows.append({"name": name, "where": where, "status": f"not installed: {e}"})
    for name, path in sorted(user_models().items()):
        try:
            rows.append(describe_file(name, path, "registered"))
        except ModelError as e:
            rows.append({"name": name, "where": "registered", "path": path,
                         "status": f"unusable: {e}"})
    return rows

