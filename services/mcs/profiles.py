"""The user's client config file: where the CLI and `Client.from_env()` find a mesh and its credentials.

`$XDG_CONFIG_HOME/mcs/config.toml` (default `~/.config/mcs/config.toml`):

    default_profile = "local"

    [profiles.local]                       # written by `mcs up` on its first start
    url = "http://127.0.0.1:8080"
    token_file = "/home/me/mesh/data/admin-token"

    [profiles.home]
    url = "http://100.64.0.7:8080"
    token = "..."                          # or token_file; or agent_id + agent_secret

Keys at the top level apply to every profile; a profile's keys override them. The profile is chosen by
`--profile NAME`, else `MCS_PROFILE`, else `default_profile`. Precedence, per value: an explicit option,
then the environment (MCS_URL, MCS_ADMIN_TOKEN, MCS_AGENT_ID + MCS_AGENT_SECRET), then the profile, then
the defaults (http://127.0.0.1:8080 and the token file beside MCS_DB, ./data/admin-token).

`mcs up` never rewrites the file: it creates it when there is none, and otherwise only appends a profile
for its mesh when no profile of that name exists.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mcs.errors import ConfigError

PROFILE_ENV = "MCS_PROFILE"
DEFAULT_URL = "http://127.0.0.1:8080"  # the api `mcs up` starts, when nothing names another
KEYS = ("url", "token", "token_file", "agent_id", "agent_secret")
DEFAULT_PROFILE = "local"  # the name `mcs up` gives the mesh on the default port
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a bare TOML key: [profiles.NAME] needs no quoting


def config_path(env: Mapping[str, str] | None = None) -> Path:
    e = os.environ if env is None else env
    base = e.get("XDG_CONFIG_HOME") or str(Path(e.get("HOME") or Path.home()) / ".config")
    return Path(base) / "mcs" / "config.toml"


@dataclass(frozen=True)
class Profile:
    name: str | None  # None: the file's top-level keys, no profile chosen
    path: Path
    url: str | None = None
    token: str | None = None
    token_file: Path | None = None
    agent_id: str | None = None
    agent_secret: str | None = None

    def admin_token(self) -> str | None:
        """The token, read from `token_file` when the profile names one (ConfigError when unreadable)."""
        if self.token:
            return self.token
        if self.token_file is None:
            return None
        try:
            return self.token_file.read_text().strip() or None
        except OSError as exc:
            where = f"profile {self.name!r}" if self.name else "the top level"
            raise ConfigError(
                f"cannot read the token file {self.token_file} ({where} of {self.path}): {exc.strerror or exc}; "
                "edit the config file, or choose another profile (--profile NAME)"
            ) from None


def _read(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _values(table: Mapping[str, object], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in KEYS:
        value = table.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string")
        out[key] = value
    return out


def load(name: str | None = None, env: Mapping[str, str] | None = None) -> Profile | None:
    """The chosen profile (see the module's doc), or None when there is no config file and no profile was
    asked for. ConfigError for a broken file or a profile it does not have."""
    e = os.environ if env is None else env
    path = config_path(e)
    wanted = name or e.get(PROFILE_ENV) or None
    if not path.exists():
        if wanted:
            raise ConfigError(f"profile {wanted!r} asked for, but there is no config file {path} (mcs up writes one)")
        return None
    data = _read(path)
    values = _values(data, str(path))
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: [profiles] must be a table of [profiles.NAME] tables")
    default = data.get("default_profile")
    chosen = wanted or (default if isinstance(default, str) else None)
    if chosen:
        table = profiles.get(chosen)
        if not isinstance(table, dict):
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"no profile {chosen!r} in {path} (profiles: {known})")
        values |= _values(table, f"{path} [profiles.{chosen}]")
    token_file = None
    if values.get("token_file"):
        token_file = Path(values["token_file"]).expanduser()
        if not token_file.is_absolute():
            token_file = path.parent / token_file
    return Profile(
        name=chosen,
        path=path,
        url=values.get("url"),
        token=values.get("token"),
        token_file=token_file,
        agent_id=values.get("agent_id"),
        agent_secret=values.get("agent_secret"),
    )


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def remember_mesh(name: str, *, url: str, token_file: Path, env: Mapping[str, str] | None = None) -> str:
    """Make the config file know this mesh as profile NAME, as `mcs up` does at start; returns what it did,
    in one line for the user. Creates the file (mode 0600) when there is none, making NAME the default;
    appends the profile when the file has no profile NAME; never changes what is already there."""
    path = config_path(env)
    token_file = token_file.resolve()
    section = f"[profiles.{name}]\nurl = {_toml_string(url)}\ntoken_file = {_toml_string(str(token_file))}\n"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (
            f"# The mcs CLI's config, written by `mcs up` on {stamp}. Edit freely: `mcs up` never rewrites it,\n"
            '# it only appends a profile for a mesh it does not know. See the README, "The config file".\n'
            f"default_profile = {_toml_string(name)}\n\n{section}"
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return f"CLI config written to {path} (profile {name!r}, the default)"
    try:
        existing = load(name, env)
    except ConfigError as exc:
        if f"no profile {name!r}" not in str(exc):
            return f"CLI config {path} not changed: {exc}"
        existing = None
    if existing is not None:
        if existing.url == url and existing.token_file == token_file:
            return f"CLI config {path}: profile {name!r} is this mesh"
        gone = existing.token_file is not None and not existing.token_file.exists()
        why = f" (its token file {existing.token_file} no longer exists)" if gone else ""
        return (
            f"CLI config {path} not changed: its profile {name!r} points elsewhere{why}; "
            f"edit it, or use `mcs up --profile OTHER`"
        )
    with path.open("a") as f:
        f.write(f"\n# added by `mcs up` on {stamp}\n{section}")
    return f"CLI config {path}: added profile {name!r} (use it with --profile {name} or MCS_PROFILE={name})"
