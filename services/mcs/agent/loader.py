"""`module:function` (or `path/to/file.py:function`) -> the handler it names, for `mcs agent run`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from mcs.errors import ConfigError


def _import(module: str) -> ModuleType:
    if module.endswith(".py") or "/" in module:
        path = Path(module)
        if not path.is_file():
            raise ConfigError(f"no such file: {module}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load {module} as Python")
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = loaded
        spec.loader.exec_module(loaded)
        return loaded
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like `python -m`: modules in the current folder are found
    return importlib.import_module(module)


def load_handler(spec: str) -> Any:
    """The callable `spec` names. ConfigError (one line) when it cannot be imported or is not callable."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"the handler must be given as module:function, not {spec!r}")
    try:
        target: Any = _import(module)
    except ConfigError:
        raise
    except ModuleNotFoundError as exc:
        raise ConfigError(f"cannot import {module!r}: {exc}") from None
    except Exception as exc:  # the user's module failed while importing: say how, in one line
        raise ConfigError(f"importing {module!r} failed: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"{module!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise ConfigError(f"{spec} is a {type(target).__name__}, not a function")
    return target
