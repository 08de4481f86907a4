"""The egress policy: where MCS (and its LLM agent) may open an outbound connection.

One policy object per purpose, three purposes (DESIGN.md, "Safety defaults"):

- `notify`: the webhooks the notifier posts to an agent's `notify_url`. Allowed by default: loopback,
  private (RFC 1918), CGNAT (100.64.0.0/10, tailnets), ULA (fc00::/7) and public addresses; setting
  `MCS_NOTIFY_ALLOW` replaces that list with its own entries.
- `alert`: the alert senders (Telegram's API, `MCS_ALERT_WEBHOOK_URL`), which the operator configured:
  everything but what is refused always.
- `fetch`: what the LLM agent fetches for a task (its payload's `url`): public addresses only, plus the
  entries of `--allow-fetch`.

Refused always, whatever a list says: link-local (169.254.0.0/16, fe80::/10), the cloud metadata
addresses, unspecified, broadcast, multicast and reserved addresses, and (notify and alert) an MCS
process's own ports on an address of this machine.

Every address a name resolves to is decided on, and one refused address refuses the name. The check runs
twice: on the URL when it is given (registration: 422), and in the transport at connect time, which
connects to the very address it checked (a name that resolves elsewhere a second later gains nothing).
`Policy.decide` is pure; `check` resolves and decides; `EgressTransport` is the httpx transport (in
`mcs.egress_transport`, loaded on first use: the dispatcher and watchdog read policies, never httpx).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import TYPE_CHECKING, Any

from mcs.errors import McsError

if TYPE_CHECKING:
    from mcs.egress_transport import EgressTransport as EgressTransport

Address = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[list[Address]]]

RESOLVE_TIMEOUT = 5.0  # seconds for one name lookup

# Addresses that hand out credentials to whoever asks from inside a cloud VM. Most are link-local
# anyway; the others sit inside ranges the defaults allow (ULA, CGNAT, public), hence this list.
METADATA: dict[Address, str] = {
    ip_address("169.254.169.254"): "AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle Cloud",
    ip_address("169.254.170.2"): "AWS ECS task credentials",
    ip_address("fd00:ec2::254"): "AWS EC2 instance metadata over IPv6",
    ip_address("fd20:ce::254"): "GCP metadata over IPv6",
    ip_address("100.100.100.200"): "Alibaba Cloud",
    ip_address("192.0.0.192"): "Oracle Cloud Infrastructure Classic",
    ip_address("168.63.129.16"): "Azure WireServer",
}

# The named ranges an allow list may give as a word, in the order messages list them.
CATEGORIES: dict[str, tuple[IPv4Network | IPv6Network, ...]] = {
    "loopback": (ip_network("127.0.0.0/8"), ip_network("::1/128")),
    "private": (ip_network("10.0.0.0/8"), ip_network("172.16.0.0/12"), ip_network("192.168.0.0/16")),
    "cgnat": (ip_network("100.64.0.0/10"),),
    "ula": (ip_network("fc00::/7"),),
}
PUBLIC = "public"  # globally routable: everything ipaddress calls global and no other category holds
SPECIAL = "special-purpose"  # documentation, benchmarking and other non-global ranges: only by CIDR
ALWAYS_REFUSED = frozenset({"metadata", "link-local", "unspecified", "broadcast", "multicast", "reserved"})
KEYWORDS = (*CATEGORIES, PUBLIC)
NOTIFY_DEFAULT = ("loopback", "private", "cgnat", "ula", PUBLIC)

_NAT64 = ip_network("64:ff9b::/96")
_THIS_NETWORK = ip_network("0.0.0.0/8")


class EgressRefused(McsError):
    """The egress policy refuses this destination. The message is safe to show to whoever gave the URL:
    it names the category of a resolved address, never the address a name resolved to."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message  # for the operator's log: with the resolved address


class Unresolvable(McsError):
    """The name does not resolve (or the resolver failed); `permanent` when the name does not exist."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def classify(address: Address) -> str:
    """The category of an address: one of ALWAYS_REFUSED, CATEGORIES, PUBLIC or SPECIAL."""
    if isinstance(address, IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:  # it reaches (or is translated to) that IPv4 address
            return classify(embedded)
        if address.scope_id:
            address = IPv6Address(str(address).split("%", 1)[0])
    if address in METADATA:
        return "metadata"
    if address.is_unspecified or (isinstance(address, IPv4Address) and address in _THIS_NETWORK):
        return "unspecified"  # Linux connects 0.0.0.0 to this machine
    if address == IPv4Address("255.255.255.255"):
        return "broadcast"
    if address.is_multicast:
        return "multicast"
    if address.is_link_local:
        return "link-local"
    if isinstance(address, IPv6Address) and address.is_site_local:
        return "reserved"
    for name, nets in CATEGORIES.items():
        if any(address in net for net in nets):
            return name
    if address.is_reserved:
        return "reserved"
    if address.is_global:
        return PUBLIC
    return SPECIAL


def _article(category: str) -> str:
    return f"an {category}" if category[0] in "aeiou" else f"a {category}"


@dataclass(frozen=True)
class Rule:
    """One allow-list entry: a category word, a network (CIDR or one address) or a host name (`*.` for
    its subdomains), with an optional port."""

    text: str
    category: str | None = None
    network: IPv4Network | IPv6Network | None = None
    name: str | None = None
    port: int | None = None

    def matches(self, host: str, port: int, address: Address, category: str) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.category is not None:
            return category == self.category
        if self.network is not None:
            plain = address.ipv4_mapped if isinstance(address, IPv6Address) and address.ipv4_mapped else address
            return plain.version == self.network.version and plain in self.network
        assert self.name is not None
        if self.name.startswith("*."):
            return host.endswith(self.name[1:])
        return host == self.name


def normalize_host(host: str) -> str:
    """A host as rules and pins compare it: lower case, no trailing dot, no IPv6 brackets, IDNA-encoded."""
    value = host.strip().rstrip(".").lower()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    try:
        return str(ip_address(value))
    except ValueError:
        pass
    try:
        return value.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{host!r} is not a host name") from exc


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


def valid_host(host: str) -> str:
    """`host` normalized, or ValueError: an IP address or a DNS name (no port, no scheme)."""
    value = normalize_host(host)
    try:
        ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.split(".")
    if not value or len(value) > 253 or not set(value) <= _NAME_CHARS or not all(0 < len(x) <= 63 for x in labels):
        raise ValueError(f"{host!r} is not a host name or an IP address")
    return value


def parse_rule(text: str) -> Rule:
    """One entry: `private`, `10.0.0.0/8`, `192.168.1.5:8080`, `[fd7a::1]:80`, `fd7a:115c::/48`,
    `hooks.example.org`, `*.ts.net`, `vps.example.org:443`."""
    entry = text.strip()
    if not entry:
        raise ValueError("an empty entry")
    if entry.lower() in KEYWORDS:
        return Rule(text=entry, category=entry.lower())
    port: int | None = None
    body = entry
    if body.startswith("["):  # [IPv6] or [IPv6]:port
        close = body.find("]")
        if close < 0:
            raise ValueError(f"{text!r}: a '[' without ']'")
        rest = body[close + 1 :]
        body = body[1:close]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            port = _port(rest[1:], text)
    elif body.count(":") == 1:  # host:port or IPv4:port (a bare IPv6 address has several colons)
        body, raw_port = body.split(":")
        port = _port(raw_port, text)
    try:
        return Rule(text=entry, network=ip_network(body, strict=False), port=port)
    except ValueError:
        pass
    wildcard = body.startswith("*.")
    try:
        name = valid_host(body[2:] if wildcard else body)
    except ValueError:
        raise ValueError(f"{text!r} is not a CIDR, an address, a host name or one of {', '.join(KEYWORDS)}") from None
    return Rule(text=entry, name=("*." + name) if wildcard else name, port=port)


def _port(raw: str, text: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{text!r}: {raw!r} is not a port")
    return int(raw)


def parse_rules(entries: str | Iterable[str]) -> tuple[Rule, ...]:
    """A comma-separated list (or several entries) of allow-list entries; ValueError names a bad one."""
    items = entries.split(",") if isinstance(entries, str) else list(entries)
    return tuple(parse_rule(item) for item in items if item.strip())


def is_local_address(address: Address) -> bool:
    """Whether the address belongs to this machine: binding a socket to it works only then."""
    if address.is_loopback:
        return True
    family = socket.AF_INET6 if isinstance(address, IPv6Address) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
        return True
    except OSError:
        return False


async def resolve(host: str, port: int) -> list[Address]:
    """Every address `host` resolves to (an IP literal is itself), looked up off the event loop."""
    try:
        return [ip_address(host)]
    except ValueError:
        pass
    import asyncio  # here: only the processes that connect anywhere (api, notifier) run an event loop

    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), RESOLVE_TIMEOUT
        )
    except TimeoutError:
        raise Unresolvable(f"looking up {host} timed out", permanent=False) from None
    except socket.gaierror as exc:
        permanent = exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
        raise Unresolvable(f"{host} does not resolve", permanent=permanent) from None
    found: list[Address] = []
    for info in infos:
        addr = ip_address(str(info[4][0]).split("%", 1)[0])
        if addr not in found:
            found.append(addr)
    if not found:
        raise Unresolvable(f"{host} does not resolve", permanent=True)
    return found


@dataclass(frozen=True)
class Policy:
    """Where one kind of outbound request may go. `what` names it in messages ("notify_url"), `setting`
    the switch that opens more up ("MCS_NOTIFY_ALLOW"), `default` says what that switch's default is."""

    what: str
    allow: tuple[Rule, ...]
    setting: str
    default: str = ""
    own_ports: frozenset[int] = frozenset()
    # MCS_EGRESS_DENY: refused always, like metadata addresses. A host name here also refuses every address
    # it resolves to (compose's service names: `api` and its container address are the same target).
    deny: tuple[Rule, ...] = ()
    is_local: Callable[[Address], bool] = is_local_address
    resolver: Resolver | None = field(default=None, compare=False)  # None: this module's `resolve`

    def decide(self, host: str, port: int, address: Address) -> str | None:
        """None when the connection may go ahead, else why not (without the address if `host` is a name)."""
        host = normalize_host(host)
        category = classify(address)
        literal = host == str(address)
        subject = f"{self.what} host {host}" + (" is" if literal else " resolves to")
        if category in ALWAYS_REFUSED:
            what = "a cloud metadata address" if category == "metadata" else _article(category) + " address"
            return f"{subject} {what}: refused always"
        if port in self.own_ports and (category == "loopback" or self.is_local(address)):
            return f"{self.what} {host}:{port} is the port of an MCS process on this machine: refused always"
        if any(rule.matches(host, port, address, category) for rule in self.deny):
            return f"{subject} an address MCS_EGRESS_DENY refuses: refused always"
        if any(rule.matches(host, port, address, category) for rule in self.allow):
            return None
        default = f" (default: {self.default})" if self.default else ""
        return f"{subject} {_article(category)} address, not allowed by {self.setting}{default}"

    async def check(self, host: str, port: int) -> list[Address]:
        """Resolve `host` and decide on every address; all of them, or EgressRefused / Unresolvable."""
        resolver = self.resolver or resolve
        addresses = await resolver(host, port)
        for address in addresses:
            why = self.decide(host, port, address)
            if why is None and address in await self._denied_addresses(port):
                why = f"{self.what} host {host} is an address of a host MCS_EGRESS_DENY names: refused always"
            if why is not None:
                raise EgressRefused(why, detail=f"{why} ({host} -> {address})")
        return addresses

    async def _denied_addresses(self, port: int) -> set[Address]:
        """The addresses of the host names in `deny` (for this port), looked up now: a name that does not
        resolve denies nothing (outside compose, `api` is nobody)."""
        resolver = self.resolver or resolve
        found: set[Address] = set()
        for rule in self.deny:
            if rule.name is None or rule.name.startswith("*.") or rule.port not in (None, port):
                continue
            try:
                found.update(await resolver(rule.name, port))
            except Unresolvable:
                continue
        return found

    async def check_url(self, url: str) -> list[Address]:
        """`check` for a URL's host and port; an unparsable or non-HTTP URL is refused too."""
        host, port = url_target(url, what=self.what)
        return await self.check(host, port)


def literal_refusal(policy: Policy, url: str) -> str | None:
    """Why `policy` refuses `url` when its host is an IP address (no lookup: for checking settings at
    start-up), else None; a name is decided on when it is used."""
    try:
        host, port = url_target(url, what=policy.what)
        address = ip_address(host)
    except (EgressRefused, ValueError):
        return None
    return policy.decide(host, port, address)


def url_target(url: str, *, what: str = "URL") -> tuple[str, int]:
    """(host, port) of an http(s) URL, or EgressRefused."""
    import httpx  # here, not at the top: see the module's docstring

    try:
        parsed = httpx.URL(url)
        port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme, 0)
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise EgressRefused(f"{what} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not host:
        raise EgressRefused(f"{what} must be an http:// or https:// URL with a host")
    try:
        return normalize_host(host), port
    except ValueError as exc:  # an empty label or one over 63 characters: IDNA refuses it
        raise EgressRefused(f"{what} is not a valid URL: {exc}") from None


def mcs_ports(settings: Any) -> frozenset[int]:
    """The ports MCS's own processes listen on: the api and the three metrics servers."""
    s = settings
    return frozenset({s.port, s.dispatcher_metrics_port, s.watchdog_metrics_port, s.notifier_metrics_port})


def notify_policy(settings: Any) -> Policy:
    """For agents' notify URLs: `MCS_NOTIFY_ALLOW`, or the default list."""
    return Policy(
        what="notify_url",
        allow=settings.notify_allow if settings.notify_allow is not None else parse_rules(NOTIFY_DEFAULT),
        setting="MCS_NOTIFY_ALLOW",
        default=",".join(NOTIFY_DEFAULT) if settings.notify_allow is None else "",
        own_ports=mcs_ports(settings),
        deny=settings.egress_deny,
    )


def alert_policy(settings: Any) -> Policy:
    """For the alert senders: the operator chose the URLs, so only what is refused always is refused."""
    return Policy(
        what="alert URL",
        allow=(Rule(text="0.0.0.0/0", network=ip_network("0.0.0.0/0")), Rule(text="::/0", network=ip_network("::/0"))),
        setting="nothing (refused always)",
        own_ports=mcs_ports(settings),
        deny=settings.egress_deny,
    )


def fetch_policy(allow: Sequence[str] = ()) -> Policy:
    """For what the LLM agent fetches on a task's behalf: public addresses, plus `--allow-fetch` entries."""
    return Policy(what="url", allow=(Rule(text=PUBLIC, category=PUBLIC), *parse_rules(allow)), setting="--allow-fetch")


def __getattr__(name: str) -> Any:
    """`egress.EgressTransport`, imported (with httpx) the first time someone asks for it."""
    if name == "EgressTransport":
        from mcs.egress_transport import EgressTransport

        return EgressTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
