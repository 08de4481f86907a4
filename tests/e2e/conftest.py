"""End-to-end fixtures: the repository's own compose.yaml, run by testcontainers against images built from
this repository, on the local Docker engine.

One compose project per test session (a unique name, so parallel runs on one machine never meet), built
once, started once; the tests run in file order against it. Everything the session creates (containers,
networks, volumes) is removed at the end, after a failure too. Images are tagged by a hash of what goes
into them, so an unchanged tree is not rebuilt. Without a Docker engine every test here skips.

Base images come from the environment, as `../shared/docker/prepare.sh` exports them: PYTHON_IMAGE,
BASE_IMAGE, PROMETHEUS_IMAGE (defaults: the real ones in compose.yaml).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcs.client import Client
from tests import polling

E2E = Path(__file__).resolve().parent
REPO = E2E.parents[1]
PYTHON_IMAGE = os.environ.get("PYTHON_IMAGE", "python:3.12-slim")
BASE_IMAGE = os.environ.get("BASE_IMAGE", "debian:bookworm-slim")
PROMETHEUS_IMAGE = os.environ.get("PROMETHEUS_IMAGE", "prom/prometheus:v3.5.0")
MCS_SERVICES = ["api", "dispatcher", "watchdog", "notifier"]
STARTED_SERVICES = [*MCS_SERVICES, "prometheus"]  # Grafana has no image here; the tunnel has its own test
BUILD_TIMEOUT = 600  # seconds; a first build downloads every dependency from PyPI
UP_TIMEOUT = 240  # seconds for `docker compose up --wait` on a busy 2-core machine
AGENT_PORT = 8765
SETUP_TIMEOUT = 900  # seconds per e2e test, fixture setup included: cold builds on a busy machine


def _docker_problem() -> str | None:
    """Why the container tests cannot run here, or None when a Docker engine and Compose v2 answer."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=30)
        if info.returncode != 0:
            return "no Docker engine answers (`docker info` failed)"
        compose = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, timeout=30)
        if compose.returncode != 0:
            return "Docker Compose v2 is not installed (`docker compose version` failed)"
    except subprocess.TimeoutExpired:
        return "no Docker engine answers (`docker info` timed out)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if E2E in Path(str(item.fspath)).parents]
    if not mine:
        return
    problem = _docker_problem()
    for item in mine:
        if problem:
            item.add_marker(pytest.mark.skip(reason=f"container tests need Docker: {problem}"))
        else:
            # The first test also pays for the image builds and `compose up` (its fixtures' setup).
            item.add_marker(pytest.mark.timeout(SETUP_TIMEOUT))


# ---------------------------------------------------------------- helpers


def say(config: pytest.Config, message: str) -> None:
    """A progress line on the terminal, even while pytest captures output (slow steps say what they do)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[e2e] {message}")
    else:
        reporter.write_line(f"[e2e] {message}")


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"`docker {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.25) -> Any:
    """`tests.polling.wait_until`, polling less often: each look here asks Docker or a container."""
    return polling.wait_until(predicate, timeout=timeout, what=what, interval=interval)


def _tree_hash(*parts: Path, extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for part in parts:
        files = [part] if part.is_file() else sorted(p for p in part.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            digest.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _image_id(name: str) -> str:
    proc = docker("image", "inspect", "--format", "{{.Id}}", name, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def build_image(config: pytest.Config, *, name: str, context: Path, inputs: list[Path], args: dict[str, str]) -> str:
    """Build `context` as `name:<hash of its inputs and base images>` unless that tag exists already."""
    base_ids = " ".join(f"{k}={v}@{_image_id(v)}" for k, v in sorted(args.items()))
    tag = f"{name}:{_tree_hash(*inputs, extra=base_ids)}"
    if _image_id(tag):
        say(config, f"image {tag} is up to date")
        return tag
    where = context.relative_to(REPO) if context != REPO else "."
    say(config, f"building {tag} from {where} (a minute or two the first time)")
    started = time.monotonic()
    build_args = [a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")]
    docker("build", "--quiet", *build_args, "-t", tag, str(context), timeout=BUILD_TIMEOUT)
    size = docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()
    say(config, f"built {tag} in {time.monotonic() - started:.0f} s ({int(size) / 1e6:.0f} MB)")
    return tag


@dataclass
class Images:
    mcs: str
    tunnel: str
    sshd: str


@pytest.fixture(scope="session")
def images(pytestconfig: pytest.Config) -> Images:
    return Images(
        mcs=build_image(
            pytestconfig,
            name="mcs-e2e",
            context=REPO,
            inputs=[
                REPO / p
                for p in (
                    "Dockerfile",
                    ".dockerignore",
                    "pyproject.toml",
                    "README.md",
                    "services",
                    "docker/healthcheck.sh",
                )
            ],
            args={"PYTHON_IMAGE": PYTHON_IMAGE},
        ),
        tunnel=build_image(
            pytestconfig,
            name="mcs-e2e-tunnel",
            context=REPO / "tunnel",
            inputs=[REPO / "tunnel" / "Dockerfile", REPO / "tunnel" / "entrypoint.sh"],
            args={"BASE_IMAGE": BASE_IMAGE},
        ),
        sshd=build_image(
            pytestconfig,
            name="mcs-e2e-sshd",
            context=E2E / "sshd",
            inputs=[E2E / "sshd"],
            args={"BASE_IMAGE": BASE_IMAGE},
        ),
    )


@pytest.fixture(scope="session")
def postgres_image(pytestconfig: pytest.Config) -> str:
    """docker/postgres (the `postgres` profile's database)."""
    context = REPO / "docker" / "postgres"
    return build_image(
        pytestconfig, name="mcs-e2e-postgres", context=context, inputs=[context], args={"BASE_IMAGE": BASE_IMAGE}
    )


@pytest.fixture(scope="session")
def proxy_image(pytestconfig: pytest.Config) -> str:
    """docker/proxy (the `postgres` profile's HAProxy in front of the api replicas)."""
    context = REPO / "docker" / "proxy"
    return build_image(
        pytestconfig, name="mcs-e2e-proxy", context=context, inputs=[context], args={"BASE_IMAGE": BASE_IMAGE}
    )


# ---------------------------------------------------------------- the compose stack


@dataclass
class Stack:
    """One compose project made from the repository's compose.yaml."""

    project: str
    env_file: Path
    admin_token: str
    images: Images
    tmp: Path
    containers: list[Any] = field(default_factory=list)  # extra containers the tests started
    _url: str | None = None

    @property
    def network(self) -> str:
        return f"{self.project}_default"

    def compose(self, *args: str, check: bool = True, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """`docker compose` for this project (the tunnel profile included, so `down` takes it too)."""
        cmd = ["compose", "--env-file", str(self.env_file), "-f", str(REPO / "compose.yaml"), "--profile", "tunnel"]
        return docker(*cmd, *args, check=check, timeout=timeout)

    def compose_tc(self, services: list[str], profiles: list[str] | None = None) -> Any:
        from testcontainers.compose import DockerCompose

        return DockerCompose(
            context=REPO,
            compose_file_name="compose.yaml",
            env_file=str(self.env_file),
            services=services,
            profiles=profiles,
            wait=True,
            build=False,
            pull=False,
        )

    def up(self, services: list[str] = STARTED_SERVICES, profiles: list[str] | None = None) -> None:
        """`docker compose up --wait` through testcontainers: returns once every service is healthy."""
        self.compose_tc(services, profiles).start()
        self._url = None  # `up` after `down` publishes the api on another free port

    def port(self, service: str, port: int) -> int:
        published = self.compose("port", service, str(port)).stdout.strip()
        return int(published.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = f"http://127.0.0.1:{self.port('api', 8080)}"
        return self._url

    def admin(self) -> Client:
        return Client(self.url, admin_token=self.admin_token, timeout=15)

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).stdout.split()
        assert len(ids) == 1, f"expected one {service} container, found {ids}"
        return ids[0]

    def inspect(self, service: str) -> dict[str, Any]:
        return json.loads(docker("inspect", self.container(service)).stdout)[0]

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", "--tail", "200", service, check=False).stdout


def _write_keys(stack_tmp: Path, tunnel_image: str) -> Path:
    """A client key pair and an sshd host key pair, made with the tunnel image's ssh-keygen."""
    keys = stack_tmp / "keys"
    keys.mkdir()
    keygen = "ssh-keygen -q -t ed25519 -N '' -C e2e-client -f /keys/client && "
    keygen += "ssh-keygen -q -t ed25519 -N '' -C e2e-host -f /keys/host"
    user = f"{os.getuid()}:{os.getgid()}"
    docker("run", "--rm", "--user", user, "--entrypoint", "sh", "-v", f"{keys}:/keys", tunnel_image, "-c", keygen)
    for name in ("client.pub", "host", "host.pub"):
        (keys / name).chmod(0o644)  # read by the sshd container's root and the test
    return keys


@pytest.fixture(scope="session")
def stack(pytestconfig: pytest.Config, images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    tmp.chmod(0o755)
    project = f"mcs-e2e-{uuid.uuid4().hex[:8]}"
    keys = _write_keys(tmp, images.tunnel)
    host_key = (keys / "host.pub").read_text().split()
    (keys / "known_hosts").write_text(f"{project}-sshd {host_key[0]} {host_key[1]}\n")
    admin_token = "e2e-" + secrets.token_urlsafe(24)
    settings = {
        "COMPOSE_PROJECT_NAME": project,
        "MCS_IMAGE": images.mcs,
        "MCS_PULL_POLICY": "never",  # built above, with a tag per content hash
        "TUNNEL_IMAGE": images.tunnel,
        "PYTHON_IMAGE": PYTHON_IMAGE,
        "BASE_IMAGE": BASE_IMAGE,
        "PROMETHEUS_IMAGE": PROMETHEUS_IMAGE,
        "MCS_ADMIN_TOKEN": admin_token,
        "GRAFANA_ADMIN_PASSWORD": "not-started-in-tests",
        # Empty: Docker picks free host ports, so runs never collide with anything on this machine.
        "MCS_API_PORT": "",
        "PROMETHEUS_PORT": "",
        "GRAFANA_PORT": "",
        "MCS_HEALTHCHECK_INTERVAL": "3s",
        # A webhook refused while the tunnel is down is retried often and long enough to outlive it.
        "MCS_WEBHOOK_RETRY_BASE": "0.5",
        "MCS_WEBHOOK_RETRY_MAX": "2",
        "MCS_WEBHOOK_ATTEMPTS": "60",
        "TUNNEL_TARGET": f"mesh@{project}-sshd:22",
        "TUNNEL_FORWARDS": f"-L 0.0.0.0:{AGENT_PORT}:127.0.0.1:{AGENT_PORT} -R 127.0.0.1:8080:api:8080",
        "TUNNEL_KEY_FILE": str(keys / "client"),
        "TUNNEL_KNOWN_HOSTS_FILE": str(keys / "known_hosts"),
    }
    env_file = tmp / "e2e.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    stack = Stack(project=project, env_file=env_file, admin_token=admin_token, images=images, tmp=tmp)
    say(pytestconfig, f"compose project {project}: starting {', '.join(STARTED_SERVICES)}")
    started = time.monotonic()
    try:
        stack.up()
        say(pytestconfig, f"all healthy in {time.monotonic() - started:.0f} s; api at {stack.url}")
        yield stack
    finally:
        for container in stack.containers:
            try:
                container.stop()
            except Exception:  # already gone: nothing to clean
                pass
        say(pytestconfig, f"removing compose project {project} (containers, network, volumes)")
        down = stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        if down.returncode != 0:
            say(pytestconfig, f"`docker compose down` failed: {down.stderr.strip()}")
        leftovers = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}", check=False)
        for cid in leftovers.stdout.split():
            docker("rm", "-fv", cid, check=False)
        docker("network", "rm", stack.network, check=False)
        for volume in ("data", "prometheus", "grafana"):
            docker("volume", "rm", f"{project}_{volume}", check=False)


@pytest.fixture
def admin(stack: Stack) -> Iterator[Client]:
    """An admin client for the api where it is published now."""
    with stack.admin() as client:
        yield client


@dataclass
class AgentContainer:
    """The stdlib agent (tests/e2e/agent.py) in a container: its name, secrets and its JSON-line log."""

    name: str
    secret: str
    webhook_secret: str
    container: Any
    stopped: bool = False

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        stdout, _ = self.container.get_logs()
        found = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
        return [e for e in found if kind is None or e["event"] == kind]

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.container.stop()


def start_agent(
    stack: Stack,
    admin: Client,
    *,
    name: str,
    image: str,
    mcs_url: str,
    listen: str,
    notify_url: str,
    command: str | None = "python3 -u /agent/agent.py",
    container_name: str | None = None,
    mounts: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> AgentContainer:
    """Create agent `name` (capability = its name) and start a container that runs it (`env`: more settings)."""
    from testcontainers.core.container import DockerContainer

    creds = admin.create_agent(name, [name])
    container = (
        DockerContainer(image)
        .with_name(container_name or f"{stack.project}-{name}")
        .with_volume_mapping(str(E2E), "/agent", "ro")
        .with_kwargs(network=stack.network)
        .with_envs(
            MCS_URL=mcs_url,
            MCS_AGENT_ID=name,
            MCS_AGENT_SECRET=creds["secret"],
            MCS_WEBHOOK_SECRET=creds["webhook_secret"],
            AGENT_CAPABILITY=name,
            AGENT_LISTEN=listen,
            AGENT_NOTIFY_URL=notify_url,
            **(env or {}),
        )
    )
    for source, target in (mounts or {}).items():
        container = container.with_volume_mapping(source, target, "ro")
    if command:
        container = container.with_command(command)
    container.start()
    stack.containers.append(container)
    return AgentContainer(name, creds["secret"], creds["webhook_secret"], container)


def prometheus_targets(stack: Stack) -> dict[str, str]:
    """process label -> health of each active target, as Prometheus reports it."""
    try:
        resp = httpx.get(f"http://127.0.0.1:{stack.port('prometheus', 9090)}/api/v1/targets", timeout=5)
        targets = resp.json()["data"]["activeTargets"]
    except (httpx.HTTPError, ValueError, KeyError):
        return {}
    return {t["labels"].get("process", t["scrapeUrl"]): t["health"] for t in targets}
