"""A review payload that tries every way we know to make an analyzer run the code under review.

Each planted piece of code, if it ever runs, writes a file named after itself into `markers` holding the
environment it saw (with builtin modules only, so it runs even as an `os.py` or a `typing.py`). After a
review, `markers` must be empty. `outside` is a folder outside the review with its own Python file:
no analyzer may be talked into reading it (through a config file that names it) nor writing there.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path
from typing import Any

# The stdlib packages whose submodules app.py imports, so that pylint/astroid look them up (astroid's
# find_spec of a dotted stdlib name imports the package through sys.path).
PACKAGES = ("multiprocessing", "email", "xml", "concurrent", "logging", "json", "importlib", "encodings",
            "collections", "urllib", "http", "unittest", "asyncio", "ctypes", "sqlite3", "distutils", "six",
            "numpy", "pkg_resources")  # fmt: skip
SUBMODULES = ("pool", "futures", "handlers", "decoder", "util", "abc", "moves", "client", "request", "mock")
# Names of plugins and hooks the tools or Python itself might look for.
EXTRA = ("sitecustomize", "usercustomize", "conftest", "setup", "noxfile", "fabfile", "manage", "__main__",
         "whitelist", "vulture_whitelist", "pylint_evil", "bandit_evil", "enchant", "gi", "_distutils_hack",
         "pytest", "isort", "dill", "tomli", "colorama", "stevedore")  # fmt: skip

PYLINT_TOML = 'load-plugins = ["pylint_evil"]\nignore = ["app.py"]\n'
APP = """import os
import multiprocessing.pool
import email.mime.text
import xml.dom.minidom
import concurrent.futures
import logging.handlers
import json.decoder
import sqlite3.dbapi2
import distutils.util
import ctypes.util
import six.moves
import numpy.core
import typing
import pylint_evil
import bandit_evil


def run(text):
    return eval(text)


print(multiprocessing.pool, email.mime.text, xml.dom.minidom, concurrent.futures, logging.handlers)
print(json.decoder, sqlite3.dbapi2, distutils.util, ctypes.util, six.moves, numpy.core, typing)
print(pylint_evil, bandit_evil, run)
"""


def code(markers: Path, label: str) -> str:
    return (
        f"import posix as _p\n_f = open({str(markers / label)!r}, 'w')\n_f.write(repr(dict(_p.environ)))\n_f.close()\n"
    )


def one_line(markers: Path, label: str) -> str:
    return "; ".join(line for line in code(markers, label).splitlines())


def files(markers: Path, outside: Path, *, package: bool = False) -> dict[str, str]:
    """The attack's files; with `package`, the root holds an `__init__.py` (pylint then puts the folder
    above it on sys.path instead of the root itself)."""
    out: dict[str, str] = {"app.py": APP}
    if package:
        out["__init__.py"] = code(markers, "root-__init__")
    names = set(sys.stdlib_module_names) | set(importlib.metadata.packages_distributions()) | set(EXTRA)
    for name in sorted(n for n in names if n.isidentifier()):
        if name in PACKAGES:
            out[f"{name}/__init__.py"] = code(markers, f"package-{name}")
            for sub in SUBMODULES:
                out[f"{name}/{sub}.py"] = code(markers, f"module-{name}.{sub}")
            out[f"{name}/mime/__init__.py"] = out[f"{name}/dom/__init__.py"] = code(markers, f"package-{name}-sub")
            out[f"{name}/mime/text.py"] = out[f"{name}/dom/minidom.py"] = code(markers, f"module-{name}-sub")
            out[f"{name}/core.py"] = out[f"{name}/dbapi2.py"] = code(markers, f"module-{name}-core")
        else:
            out[f"{name}.py"] = code(markers, f"module-{name}")
    out["evil.pth"] = one_line(markers, "pth") + "\n"
    out["sub/evil.pth"] = "import " + one_line(markers, "pth-import").removeprefix("import ") + "\n"
    hook = lambda label: one_line(markers, f"init-hook-{label}")  # noqa: E731
    for rc in ("pylintrc", ".pylintrc", "sub/pylintrc"):
        out[rc] = f"[MAIN]\ninit-hook={hook(rc)}\nload-plugins=pylint_evil\nignore=app.py\n"
    for rc in ("pylintrc.toml", ".pylintrc.toml"):
        out[rc] = f"[tool.pylint.main]\ninit-hook = {json.dumps(hook(rc))}\n{PYLINT_TOML}"
    out["setup.cfg"] = (f"[pylint.MAIN]\ninit-hook={hook('setup.cfg')}\nload-plugins=pylint_evil\n"
                        f"[vulture]\npaths={outside}\n[bandit]\ntargets={outside}\n")  # fmt: skip
    out["tox.ini"] = (f"[pylint]\ninit-hook={hook('tox.ini')}\nload-plugins=pylint_evil\n"
                      f"[MAIN]\ninit-hook={hook('tox')}\n")  # fmt: skip
    out["pyproject.toml"] = (
        f"[tool.pylint.main]\ninit-hook = {json.dumps(hook('pyproject.toml'))}\n{PYLINT_TOML}"
        f'[tool.ruff]\nextend = "{outside}/ruff.toml"\nextend-exclude = ["app.py"]\n'
        f'[tool.bandit]\ntargets = ["{outside}"]\n'
        f'[tool.vulture]\npaths = ["{outside}"]\nexclude = ["app.py"]\n'
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "bandit_evil"\n'
    )
    out["ruff.toml"] = f'extend = "{outside}/ruff.toml"\nextend-exclude = ["app.py"]\n'
    # bandit reads a .bandit under its target unless told otherwise; `output` would make it write anywhere.
    out[".bandit"] = (f"[bandit]\ntargets = {outside}\noutput = {markers / 'bandit-output'}\nformat = txt\n"
                      "exclude = app.py\n")  # fmt: skip
    out["evil-1.0.dist-info/METADATA"] = "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n"
    out["evil-1.0.dist-info/top_level.txt"] = "bandit_evil\npylint_evil\n"
    out["evil-1.0.dist-info/entry_points.txt"] = (
        "[bandit.plugins]\nevil = bandit_evil:check\n[bandit.formatters]\njson = bandit_evil:fmt\n"
        "[pylint.plugins]\nevil = pylint_evil\n[console_scripts]\npylint = pylint_evil:main\n"
    )
    out["pylint_evil.py"] = code(markers, "plugin-pylint_evil") + "def register(linter):\n    pass\n"
    return out


def payload(markers: Path, outside: Path, *, package: bool = False) -> dict[str, Any]:
    """The attack as an `mcs-review` payload; `outside` gets a Python file with problems of its own."""
    (outside / "outside_secret.py").write_text("import os\nimport sys\neval(input())\n")
    (outside / "ruff.toml").write_text('[lint]\nselect = ["ALL"]\n')
    planted = files(markers, outside, package=package)
    return {"root": "attack", "files": [{"path": p, "content": c} for p, c in planted.items()]}
