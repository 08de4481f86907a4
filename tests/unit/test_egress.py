"""The egress policy's decisions (pure), its parser, and its transport against a receiver on loopback."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address

import httpx
import pytest

from mcs import egress
from mcs.config import Settings
from mcs.errors import ConfigError


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),  # AWS over IPv6: inside ULA, which notify URLs allow
        ("100.100.100.200", "metadata"),  # Alibaba: inside CGNAT, which notify URLs allow
        ("192.0.0.192", "metadata"),  # Oracle Cloud Classic
        ("::ffff:169.254.169.254", "metadata"),  # IPv4-mapped: the same address
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),  # Linux connects it to this machine
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.5", "private"),
        ("100.101.102.103", "cgnat"),
        ("fd7a:115c:a1e0::1", "ula"),
        ("93.184.215.14", "public"),
        ("2a00:1450:4001::1", "public"),
        ("192.0.2.1", "special-purpose"),  # documentation range
    ],
)
def test_addresses_fall_in_their_category(address, category):
    assert egress.classify(ip_address(address)) == category


def policy(allow: str | None = None, **kw) -> egress.Policy:
    settings = Settings.from_env({} if allow is None else {"MCS_NOTIFY_ALLOW": allow})
    return replace(egress.notify_policy(settings), **kw)


def decide(p: egress.Policy, url_host: str, port: int, address: str) -> str | None:
    return p.decide(url_host, port, ip_address(address))


def test_notify_defaults_allow_laptop_lan_tailnet_and_public_but_never_link_local_or_metadata():
    p = policy()
    for address in ["127.0.0.1", "::1", "10.1.2.3", "192.168.1.5", "100.101.102.103", "fd7a::1", "93.184.215.14"]:
        assert decide(p, address, 9000, address) is None, address
    assert decide(p, "169.254.169.254", 80, "169.254.169.254") == (
        "notify_url host 169.254.169.254 is a cloud metadata address: refused always"
    )
    why = decide(p, "169.254.7.7", 80, "169.254.7.7")
    assert why == "notify_url host 169.254.7.7 is a link-local address: refused always"
    assert "refused always" in decide(p, "100.100.100.200", 80, "100.100.100.200")
    assert "refused always" in decide(p, "fd00:ec2::254", 80, "fd00:ec2::254")
    assert "refused always" in decide(p, "0.0.0.0", 9000, "0.0.0.0")
    # Special-purpose ranges need a CIDR of their own; the message says which setting and its default.
    why = decide(p, "192.0.2.1", 80, "192.0.2.1")
    assert why == (
        "notify_url host 192.0.2.1 is a special-purpose address, not allowed by MCS_NOTIFY_ALLOW"
        " (default: loopback,private,cgnat,ula,public)"
    )


def test_never_an_mcs_process_own_port_on_this_machine():
    p = policy()
    assert p.own_ports == {8080, 9101, 9102, 9103}
    assert decide(p, "127.0.0.1", 8080, "127.0.0.1") == (
        "notify_url 127.0.0.1:8080 is the port of an MCS process on this machine: refused always"
    )
    assert "MCS process" in decide(p, "localhost", 9103, "::1")
    assert decide(p, "127.0.0.1", 8081, "127.0.0.1") is None
    # The same port on another machine is someone else's service.
    remote = policy(is_local=lambda address: False)
    assert decide(remote, "10.0.0.9", 8080, "10.0.0.9") is None
    local = policy(is_local=lambda address: True)  # e.g. MCS_HOST=0.0.0.0 and this is the LAN address
    assert "MCS process" in decide(local, "10.0.0.9", 8080, "10.0.0.9")


def test_mcs_notify_allow_replaces_the_defaults_with_its_entries():
    p = policy("100.64.0.0/10, hooks.example.org, *.lan, 192.168.1.5:9000, [fd7a::1]:80, private")
    assert decide(p, "100.101.1.1", 80, "100.101.1.1") is None
    assert decide(p, "hooks.example.org", 443, "93.184.215.14") is None  # a name the operator trusts
    assert decide(p, "nas.lan", 80, "93.184.215.14") is None
    assert decide(p, "192.168.1.5", 9000, "192.168.1.5") is None
    assert decide(p, "fd7a::1", 80, "fd7a::1") is None
    assert decide(p, "10.1.2.3", 80, "10.1.2.3") is None  # the word `private`
    assert decide(p, "127.0.0.1", 9000, "127.0.0.1") == (
        "notify_url host 127.0.0.1 is a loopback address, not allowed by MCS_NOTIFY_ALLOW"
    )
    assert "not allowed by MCS_NOTIFY_ALLOW" in decide(p, "fd7a::1", 81, "fd7a::1")  # another port
    assert "not allowed" in decide(p, "93.184.215.14", 443, "93.184.215.14")
    # A name is told what kind of address it resolves to, never which one.
    assert decide(p, "evil.example", 80, "127.0.0.1") == (
        "notify_url host evil.example resolves to a loopback address, not allowed by MCS_NOTIFY_ALLOW"
    )
    # Nothing in the list opens up what is refused always.
    assert "refused always" in decide(policy("169.254.0.0/16,0.0.0.0/0"), "169.254.169.254", 80, "169.254.169.254")


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "ho st", "host:0", "host:99999", "[::1", "[::1]x", "-bad-.com:"])
def test_a_bad_allow_entry_is_a_clear_config_error(entry):
    with pytest.raises(ConfigError, match="MCS_NOTIFY_ALLOW"):
        Settings.from_env({"MCS_NOTIFY_ALLOW": f"10.0.0.0/8,{entry}"})


@pytest.mark.parametrize("name", ["MCS_ALERT_WEBHOOK_URL", "MCS_TELEGRAM_API"])
def test_an_alert_url_on_a_link_local_address_is_a_config_error(name):
    with pytest.raises(ConfigError, match=f"{name}: alert URL host 169.254.1.1 is a link-local address: refused"):
        Settings.from_env({name: "http://169.254.1.1/hook"})
    assert Settings.from_env({name: "http://192.168.1.5:8000/hook"})  # the operator's LAN: fine


def test_fetches_allow_public_only_unless_allowed_and_never_metadata():
    p = egress.fetch_policy()
    assert decide(p, "example.org", 443, "93.184.215.14") is None
    for address in ["127.0.0.1", "10.1.2.3", "100.101.1.1", "fd7a::1"]:
        assert "not allowed by --allow-fetch" in decide(p, address, 80, address)
    opened = egress.fetch_policy(["127.0.0.1:8000", "wiki.lan", "10.0.0.0/8", "169.254.0.0/16"])
    assert decide(opened, "127.0.0.1", 8000, "127.0.0.1") is None
    assert decide(opened, "127.0.0.1", 8001, "127.0.0.1") is not None
    assert decide(opened, "wiki.lan", 80, "192.168.1.9") is None
    assert decide(opened, "10.9.9.9", 80, "10.9.9.9") is None
    assert "refused always" in decide(opened, "169.254.169.254", 80, "169.254.169.254")
    assert "refused always" in decide(opened, "169.254.1.1", 80, "169.254.1.1")


async def test_every_resolved_address_is_decided_on_and_one_refused_address_refuses_the_name():
    async def resolver(host, port):
        return [ip_address("93.184.215.14"), ip_address("169.254.169.254")]

    p = policy(resolver=resolver)
    with pytest.raises(egress.EgressRefused) as caught:
        await p.check_url("https://rebind.example/hook")
    assert str(caught.value) == "notify_url host rebind.example resolves to a cloud metadata address: refused always"
    assert "169.254.169.254" in caught.value.detail  # for the operator's log only


async def test_the_deny_list_refuses_compose_services_by_name_and_by_address():
    # In compose, MCS_EGRESS_DENY names the stack's services: an agent must not reach `api:8080`, nor the
    # api container's address, nor Prometheus, whatever MCS_NOTIFY_ALLOW says; `tunnel` stays allowed.
    names = {"api": "172.18.0.3", "prometheus": "172.18.0.5", "tunnel": "172.18.0.9"}

    async def resolver(host, port):
        if host in names:
            return [ip_address(names[host])]
        try:
            return [ip_address(host)]
        except ValueError:
            raise egress.Unresolvable(f"{host} does not resolve", permanent=True) from None

    settings = Settings.from_env({"MCS_EGRESS_DENY": "api,dispatcher,prometheus:9090"})
    p = replace(egress.notify_policy(settings), resolver=resolver)
    for url in (
        "http://api:8080/v1/tasks",
        "http://172.18.0.3:8080/",
        "http://172.18.0.3:9999/",
        "http://prometheus:9090/",
    ):
        with pytest.raises(egress.EgressRefused) as caught:
            await p.check_url(url)
        assert "MCS_EGRESS_DENY" in str(caught.value) and "refused always" in str(caught.value)
    assert await p.check_url("http://tunnel:8765/hook") == [ip_address("172.18.0.9")]
    assert await p.check_url("http://172.18.0.5:8000/") == [ip_address("172.18.0.5")]  # another port of it
    assert egress.alert_policy(settings).deny == settings.egress_deny  # alerts too
    with pytest.raises(ConfigError, match="MCS_EGRESS_DENY"):
        Settings.from_env({"MCS_EGRESS_DENY": "not a host!"})


async def test_names_resolve_for_real_and_bad_urls_are_refused():
    p = policy("private")
    with pytest.raises(egress.EgressRefused, match="localhost resolves to a loopback address, not allowed"):
        await p.check_url("http://localhost:9000/hook")
    with pytest.raises(egress.Unresolvable) as caught:
        await p.check_url("http://no-such-host.invalid/hook")
    assert caught.value.permanent
    with pytest.raises(egress.EgressRefused, match="http:// or https://"):
        await p.check_url("ftp://10.0.0.1/x")
    # Host names IDNA refuses (an empty label, a label over 63 characters) are refused, not a crash (a 500
    # at registration, found by tests/acceptance/test_openapi_fuzz.py).
    for bad in ("https://a..b/x", "https://" + "0" * 300, "https://" + "a" * 64 + ".com/x"):
        with pytest.raises(egress.EgressRefused, match="not a valid URL"):
            await p.check_url(bad)
    # Other spellings of an address are decided on what they resolve to: 2852039166 is 169.254.169.254.
    with pytest.raises(egress.EgressRefused, match="2852039166 resolves to a cloud metadata address"):
        await policy().check_url("http://2852039166/latest/meta-data")


class Echo:
    """A loopback HTTP server that records the Host header of each request."""

    def __init__(self):
        self.hosts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.hosts.append(self.headers["host"])
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echo():
    server = Echo()
    yield server
    server.close()


async def test_the_transport_connects_to_the_checked_address_keeping_the_host_header(echo):
    answers = {"hooks.test": ["127.0.0.1"]}
    lookups = []

    async def resolver(host, port):
        lookups.append(host)
        return [ip_address(a) for a in answers[host]]

    transport = egress.EgressTransport(replace(egress.fetch_policy([f"hooks.test:{echo.port}"]), resolver=resolver))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"http://hooks.test:{echo.port}/x")
        assert response.text == "ok" and echo.hosts == [f"hooks.test:{echo.port}"]
        assert lookups == ["hooks.test"]  # one lookup, and the connection went where it said
        # The name now points at the metadata address (DNS rebinding): the next connection is refused.
        answers["hooks.test"] = ["169.254.169.254"]
        with pytest.raises(egress.EgressRefused, match="resolves to a cloud metadata address"):
            await client.get(f"http://hooks.test:{echo.port}/x")
    assert len(echo.hosts) == 1


async def test_the_transport_refuses_a_loopback_port_the_policy_does_not_name(echo):
    async with httpx.AsyncClient(transport=egress.EgressTransport(egress.fetch_policy())) as client:
        with pytest.raises(egress.EgressRefused, match="127.0.0.1 is a loopback address, not allowed by --allow-fetch"):
            await client.get(f"http://127.0.0.1:{echo.port}/x")
    assert echo.hosts == []


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server on 127.0.0.1 with a certificate for hooks.test (made by the openssl CLI), recording
    the SNI name and the Host header it was sent."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
         "-subj", "/CN=hooks.test", "-addext", "subjectAltName=DNS:hooks.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    seen: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen["host"] = self.headers["host"]
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: seen.update(sni=name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port, ssl.create_default_context(cafile=str(cert)), seen
    server.shutdown()
    server.server_close()


async def test_tls_verifies_the_url_host_name_while_connecting_to_the_checked_address(tls_server):
    port, trust, seen = tls_server

    async def resolver(host, port):
        return [ip_address("127.0.0.1")]

    def client(name):
        policy = replace(egress.fetch_policy([f"{name}:{port}"]), resolver=resolver)
        return httpx.AsyncClient(transport=egress.EgressTransport(policy, ssl_context=trust))

    async with client("hooks.test") as c:
        assert (await c.get(f"https://hooks.test:{port}/x")).text == "ok"
    assert seen == {"sni": "hooks.test", "host": f"hooks.test:{port}"}
    async with client("other.test") as c:  # same address, a name the certificate does not hold
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await c.get(f"https://other.test:{port}/x")
