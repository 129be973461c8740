"""Network policy: which client address to believe (trusted proxies) and where the gateway may
send a caller's data (egress to signed URLs). Framework-free: the server and every HTTP stack
the gateway uses call these same functions."""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias
from urllib.parse import urlsplit

from tabpfn_gateway.errors import ConfigurationError, EgressRefused

__all__ = [
    "DEFAULT_EGRESS_HOSTS",
    "FORWARDED_UPLOAD_HEADERS",
    "EgressPolicy",
    "Network",
    "client_address",
    "filter_upload_headers",
    "host_allowed",
    "parse_networks",
]

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

# TabPFN cloud's signed URLs point at Google Cloud Storage.
DEFAULT_EGRESS_HOSTS: tuple[str, ...] = ("storage.googleapis.com", "*.storage.googleapis.com")

# What a signed-URL PUT may carry from the upstream's ``required_headers``: what object stores
# sign (content headers, GCS/S3/Azure's own). Nothing else the upstream names (Host,
# Authorization, Cookie, hop-by-hop headers...) rides along on a caller's upload.
FORWARDED_UPLOAD_HEADERS: frozenset[str] = frozenset(
    {
        "content-type",
        "content-md5",
        "content-encoding",
        "content-disposition",
        "content-language",
        "cache-control",
    }
)
_FORWARDED_UPLOAD_PREFIXES: tuple[str, ...] = ("x-goog-", "x-amz-", "x-ms-")


def parse_networks(values: Iterable[str], setting: str) -> tuple[Network, ...]:
    """CIDR ranges (or single addresses) from a setting; ``ConfigurationError`` naming it."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigurationError(
                f"{setting}: {value!r} is not an IP address or CIDR range."
            ) from None
    return tuple(networks)


def _address(value: str) -> Address | None:
    text = value.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _within(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str:
    """The address of the client behind ``peer``, believing ``X-Forwarded-For`` only through
    trusted hops.

    ``peer`` is the socket's remote address; ``forwarded_for`` every ``X-Forwarded-For``
    header value in order. The list is read from the right (the hop nearest us): each entry
    appended by a trusted proxy is believed, and the first address not in ``trusted`` is the
    client. With no trusted proxies (the default) the header is ignored entirely, so a client
    cannot choose its own address by sending one.
    """
    current = (peer or "").strip() or "unknown"
    if not trusted:
        return current  # the common case, on every request: no address parsing
    peer_address = _address(current)
    if peer_address is None or not _within(peer_address, trusted):
        return current
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            # Garbage from beyond the last trusted proxy: the proxy's view is all we know.
            return current
        current = str(address)
        if not _within(address, trusted):
            return current
    return current


def filter_upload_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream's required headers that may ride along on a signed-URL PUT."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in FORWARDED_UPLOAD_HEADERS or lowered.startswith(_FORWARDED_UPLOAD_PREFIXES):
            kept[name] = value
    return kept


# A Host header: a DNS name or an IPv4 address, or a bracketed IPv6 address; an optional port.
_HOST_HEADER = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.?)(?::\d{1,5})?"
)


def host_allowed(host_header: str, allowed: Iterable[str]) -> bool:
    """Whether a request's ``Host`` header names a host in ``allowed`` (exact names, ``*.suffix``
    or ``*`` for any; the port is not compared). A malformed header is never allowed."""
    match = _HOST_HEADER.fullmatch(host_header.strip())
    if match is None:
        return False
    host = match.group("host").lower().rstrip(".").strip("[]")
    for pattern in allowed:
        if pattern.strip() == "*" or _host_matches(host, pattern.strip("[]")):
            return True
    return False


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.strip().lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != pattern[2:]
    return host == pattern


def _is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class EgressPolicy:
    """Where the gateway may fetch a prediction from or upload a caller's data to.

    A signed URL is allowed when it is http(s) and either has the same origin as the
    upstream the credential talks to (the operator chose that host and port: the gateway
    calls it anyway), or its host is in ``allowed_hosts`` (exact names, or ``*.suffix``) and
    every address that host resolves to is public or lies in ``allowed_networks``: loopback,
    private, link-local (cloud metadata) and other special ranges are refused by default. Redirects
    are never followed on these calls (the protocol clients make them with redirects off).
    """

    allowed_hosts: tuple[str, ...] = DEFAULT_EGRESS_HOSTS
    allowed_networks: tuple[Network, ...] = ()
    upstream_origins: frozenset[tuple[str, str, int]] = field(default_factory=frozenset)

    @classmethod
    def build(
        cls,
        *,
        upstream_urls: Iterable[str],
        allowed_hosts: Iterable[str] = DEFAULT_EGRESS_HOSTS,
        allowed_networks: Iterable[str] = (),
    ) -> EgressPolicy:
        origins = set()
        for url in upstream_urls:
            origin = _origin(url)
            if origin is not None:
                origins.add(origin)
        return cls(
            allowed_hosts=tuple(h.strip().lower() for h in allowed_hosts if h.strip()),
            allowed_networks=parse_networks(
                allowed_networks, "TABPFN_GATEWAY_EGRESS_ALLOWED_NETWORKS"
            ),
            upstream_origins=frozenset(origins),
        )

    def with_upstream(self, url: str) -> EgressPolicy:
        """This policy, also allowing ``url``'s origin (a credential's own upstream)."""
        origin = _origin(url)
        if origin is None or origin in self.upstream_origins:
            return self
        return EgressPolicy(
            self.allowed_hosts, self.allowed_networks, self.upstream_origins | {origin}
        )

    def check_url(self, url: str) -> str | None:
        """The host whose addresses still need ``check_addresses`` (None: the upstream's own
        origin, nothing more to check); ``EgressRefused`` if scheme or host are not allowed."""
        origin = _origin(url)
        if origin is None:
            raise EgressRefused("The upstream sent a signed URL that is not an http(s) URL.")
        host = origin[1]
        if origin in self.upstream_origins:
            return None
        if any(_host_matches(host, pattern) for pattern in self.allowed_hosts):
            return host
        raise EgressRefused(
            "The upstream sent a signed URL on a host this gateway may not reach "
            "(see TABPFN_GATEWAY_EGRESS_ALLOWED_HOSTS)."
        )

    def check_addresses(self, addresses: Iterable[str]) -> None:
        """``EgressRefused`` if any address is non-public and outside ``allowed_networks``."""
        for text in addresses:
            address = _address(text) if "%" not in text else _address(text.split("%", 1)[0])
            if address is None:
                raise EgressRefused("A signed URL's host resolved to something unusable.")
            if _is_public(address) or _within(address, self.allowed_networks):
                continue
            raise EgressRefused(
                "The upstream sent a signed URL on a private, loopback or link-local address "
                "(allow it with TABPFN_GATEWAY_EGRESS_ALLOWED_NETWORKS)."
            )

    def check(self, url: str) -> None:
        """``check_url``, then the host's addresses (resolved here, blocking)."""
        host = self.check_url(url)
        if host is not None:
            self.check_addresses(_resolve(host))

    async def acheck(self, url: str) -> None:
        """``check`` without blocking the event loop (anyio's resolver)."""
        import anyio

        host = self.check_url(url)
        if host is None:
            return
        literal = _address(host)
        if literal is not None:
            self.check_addresses([str(literal)])
            return
        addresses = _RESOLVED.get(host)
        if addresses is None:
            try:
                infos = await anyio.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except OSError:
                return  # an unresolvable host cannot be reached by the request either
            addresses = _RESOLVED.put(host, [str(info[4][0]) for info in infos])
        self.check_addresses(addresses)


class _Resolutions:
    """Recent answers of the resolver, by host, for ``ttl`` seconds (at most ``size`` hosts).

    Every upload and prediction download checked its storage host's addresses with a fresh
    lookup (a DNS query, through a worker thread), and then aiohttp, which keeps its own
    answers for 10 seconds, connected from its cache anyway. The addresses are still checked
    on every call (the policy differs by credential); only the lookup is reused, for as long
    as the connection pool would reuse it.
    """

    def __init__(
        self, ttl: float = 10.0, size: int = 256, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._answers: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    def get(self, host: str) -> tuple[str, ...] | None:
        with self._lock:
            answer = self._answers.get(host)
        if answer is None or self._clock() >= answer[0]:
            return None
        return answer[1]

    def put(self, host: str, addresses: Sequence[str]) -> tuple[str, ...]:
        answer = tuple(addresses)
        if answer:  # "no such host" is asked again: it may be a moment's failure
            with self._lock:
                self._answers.pop(host, None)
                if len(self._answers) >= self._size:
                    self._answers.pop(next(iter(self._answers)))
                self._answers[host] = (self._clock() + self._ttl, answer)
        return answer


_RESOLVED = _Resolutions()


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if scheme not in {"http", "https"} or not host:
        return None
    return scheme, host, port if port is not None else (443 if scheme == "https" else 80)


def _resolve(host: str) -> Sequence[str]:
    literal = _address(host)
    if literal is not None:
        return [str(literal)]
    addresses = _RESOLVED.get(host)
    if addresses is not None:
        return addresses
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return []  # an unresolvable host cannot be reached by the request either
    return _RESOLVED.put(host, [str(info[4][0]) for info in infos])
