"""The CLI's config file: which mesh and credentials a client gets (option > environment > profile >
defaults), and what `mcs up` may write into a user's file (never a change to what is there)."""

from __future__ import annotations

import socket
import stat
import tomllib

import pytest

from mcs import profiles
from mcs.client import Client
from mcs.config import Settings
from mcs.errors import ConfigError
from mcs.supervisor import pick_metrics_ports


@pytest.fixture
def home(tmp_path):
    """An environment with a config home of its own and nothing else."""
    return {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "MCS_DB": str(tmp_path / "nowhere" / "mcs.db")}


def write_config(env, text):
    path = profiles.config_path(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_default_profile_gives_url_and_token_file(home, tmp_path):
    (tmp_path / "tok").write_text("from-file\n")
    write_config(home, 'default_profile = "a"\n[profiles.a]\nurl = "http://h:1"\ntoken_file = "../../tok"\n')
    client = Client.from_env(home)
    assert client.url == "http://h:1" and client.http.headers["authorization"] == "Bearer from-file"


def test_the_environment_beats_the_profile_and_the_option_beats_both(home):
    write_config(home, 'default_profile = "a"\n[profiles.a]\nurl = "http://h:1"\ntoken = "profile-token"\n')
    env = home | {"MCS_ADMIN_TOKEN": "env-token"}
    client = Client.from_env(env)
    assert client.url == "http://h:1" and client.http.headers["authorization"] == "Bearer env-token"
    client = Client.from_env(env, admin_token="option-token", url="http://h:1")
    assert client.http.headers["authorization"] == "Bearer option-token"
    agent = Client.from_env(home | {"MCS_AGENT_ID": "bob", "MCS_AGENT_SECRET": "s"})  # credentials come whole
    assert agent.http.headers["x-agent-id"] == "bob" and "authorization" not in agent.http.headers


def test_a_profiles_token_goes_only_to_its_own_url(home):
    write_config(home, 'default_profile = "a"\n[profiles.a]\nurl = "http://h:1"\ntoken = "secret"\n')
    client = Client.from_env(home | {"MCS_URL": "http://elsewhere:2"})
    assert client.url == "http://elsewhere:2" and "authorization" not in client.http.headers


def test_profile_by_name_by_env_and_unknown(home):
    write_config(home, 'url = "http://top:1"\ntoken = "t"\n[profiles.b]\nurl = "http://b:2"\n')
    assert Client.from_env(home).url == "http://top:1"  # no default_profile: the top-level keys
    assert Client.from_env(home, profile="b").url == "http://b:2"
    b = Client.from_env(home | {"MCS_PROFILE": "b"})
    assert b.url == "http://b:2" and b.http.headers["authorization"] == "Bearer t"  # top-level keys inherited
    with pytest.raises(ConfigError, match=r"no profile 'c' in .*config.toml \(profiles: b\)"):
        Client.from_env(home, profile="c")


def test_without_a_file_the_defaults_hold_and_a_named_profile_is_an_error(home):
    assert Client.from_env(home).url == "http://127.0.0.1:8080"
    with pytest.raises(ConfigError, match="no config file"):
        Client.from_env(home, profile="x")


def test_a_broken_file_and_a_missing_token_file_say_where(home, tmp_path):
    path = write_config(home, "url = \n")
    with pytest.raises(ConfigError, match=f"{path} is not valid TOML"):
        Client.from_env(home)
    write_config(home, 'token_file = "/no/such/token"\n')
    with pytest.raises(ConfigError, match="cannot read the token file /no/such/token"):
        Client.from_env(home)


def test_mcs_up_writes_the_file_once_and_then_only_appends(home, tmp_path):
    token = tmp_path / "data" / "admin-token"
    said = profiles.remember_mesh("local", url="http://127.0.0.1:8080", token_file=token, env=home)
    path = profiles.config_path(home)
    assert said == f"CLI config written to {path} (profile 'local', the default)"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "is this mesh" in profiles.remember_mesh("local", url="http://127.0.0.1:8080", token_file=token, env=home)
    mine = path.read_text() + '\n[profiles.work]\nurl = "http://work:8080"\ntoken = "keep me"\n'
    path.write_text(mine)
    elsewhere = profiles.remember_mesh("work", url="http://127.0.0.1:8080", token_file=token, env=home)
    assert "not changed" in elsewhere and "points elsewhere" in elsewhere
    write_config(home, path.read_text() + '\n[profiles.gone]\nurl = "http://x:1"\ntoken_file = "/no/such/token"\n')
    mine = path.read_text()
    stale = profiles.remember_mesh("gone", url="http://127.0.0.1:8080", token_file=token, env=home)
    assert "its token file /no/such/token no longer exists" in stale
    added = profiles.remember_mesh("local-8081", url="http://127.0.0.1:8081", token_file=token, env=home)
    assert "added profile 'local-8081'" in added
    text = path.read_text()
    assert text.startswith(mine)  # what was there is untouched
    data = tomllib.loads(text)
    assert data["default_profile"] == "local" and data["profiles"]["local-8081"]["url"] == "http://127.0.0.1:8081"
    assert data["profiles"]["local-8081"]["token_file"] == str(token.resolve())


def test_metrics_ports_move_off_taken_ones_unless_set(home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings.from_env({}, dispatcher_metrics_port=port, watchdog_metrics_port=port)
        env: dict[str, str] = {"MCS_WATCHDOG_METRICS_PORT": str(port)}  # set by the user: left alone
        notes = pick_metrics_ports(settings, env)
    assert env["MCS_WATCHDOG_METRICS_PORT"] == str(port)
    assert env["MCS_DISPATCHER_METRICS_PORT"] != str(port)
    assert notes == [f"dispatcher metrics on port {env['MCS_DISPATCHER_METRICS_PORT']} ({port} is in use; "
                     "set MCS_DISPATCHER_METRICS_PORT to choose)"]  # fmt: skip
