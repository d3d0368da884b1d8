"""Who may read the viewer and its API, and who asked: bearer tokens stored as SHA-256 hashes,
or an identity header set by a trusted fronting proxy (oauth2-proxy style) — one or the other,
never both — or, on a loopback address only, nobody is asked.

Pure: no I/O, no framework. Tokens are compared in constant time (every stored hash is
compared, whichever matches).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from baldur_audit.schemas.errors import ConfigError

__all__ = ["Access", "StoredToken", "hash_token", "is_loopback", "parse_tokens"]

_HASH_LINE = re.compile(r"sha256:([0-9a-fA-F]{64})(?:\s+([A-Za-z0-9._@+-]{1,64}))?")
_IDENTITY = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces
_MAX_TOKEN = 4096


@dataclass(frozen=True, slots=True)
class StoredToken:
    """The SHA-256 of a bearer token and the name requests made with it are logged under."""

    digest: bytes
    name: str


def hash_token(token: str) -> str:
    """The line to store for ``token``: ``sha256:<hex>`` (as ``printf %s TOKEN | sha256sum``)."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_tokens(text: str, source: str) -> list[StoredToken]:
    """Stored tokens from ``text``: one ``sha256:<64 hex> [name]`` per line (or separated by
    commas), ``#`` comments and blank lines ignored. Raises :class:`ConfigError` naming
    ``source`` and the line (never echoing it: it might be a token pasted by mistake)."""
    found: list[StoredToken] = []
    items = [part for line in text.splitlines() for part in line.split(",")]
    for number, item in enumerate(items, 1):
        line = item.split("#", 1)[0].strip()
        if not line:
            continue
        match = _HASH_LINE.fullmatch(line)
        if match is None:
            raise ConfigError(
                f"{source}: item {number} is not 'sha256:<64 hex digits> [name]' "
                "(store the hash of a token, e.g. from `baldur-audit serve hash-token`)"
            )
        digest = bytes.fromhex(match.group(1))
        found.append(StoredToken(digest, match.group(2) or f"token:{match.group(1)[:8].lower()}"))
    return found


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) can only be reached from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Access:
    """The access policy of one server: ``tokens``, ``header`` (a trusted proxy's identity
    header, honoured only from ``proxies``) or ``open`` (loopback only, no credentials)."""

    mode: str
    tokens: tuple[StoredToken, ...] = ()
    header: str | None = None
    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        tokens: Sequence[StoredToken] | None,
        header: str | None,
        proxies: Sequence[str],
        host: str,
    ) -> Access:
        """The policy for these options; raises :class:`ConfigError` for both kinds at once,
        a header without proxies (or proxies without a header), no token in a token list, or
        no credentials on an address other than loopback."""
        if tokens is not None and header:
            raise ConfigError(
                "use bearer tokens or a trusted identity header, not both (give only one of "
                "--token-file/BALDUR_VIEWER_TOKENS and --trusted-header)"
            )
        if proxies and not header:
            raise ConfigError("--trusted-proxy needs --trusted-header")
        if header:
            if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", header):
                raise ConfigError("--trusted-header must be a header name such as X-Forwarded-User")
            if not proxies:
                raise ConfigError(
                    "--trusted-header needs --trusted-proxy CIDR: the header is honoured only from the proxy"
                )
            networks = []
            for cidr in proxies:
                try:
                    networks.append(ipaddress.ip_network(cidr, strict=False))
                except ValueError:
                    raise ConfigError(f"--trusted-proxy: not an address or CIDR: {cidr[:60]!r}") from None
            return cls("header", header=header.lower(), proxies=tuple(networks))
        if tokens is not None:
            if not tokens:
                raise ConfigError("the token list holds no token hash")
            return cls("tokens", tokens=tuple(tokens))
        if not is_loopback(host):
            raise ConfigError(
                f"refusing to serve on {host} without access control: give --token-file "
                "(or BALDUR_VIEWER_TOKENS) or --trusted-header with --trusted-proxy, or bind 127.0.0.1"
            )
        return cls("open")

    def who_by_token(self, token: str | None) -> str | None:
        """The name of the stored token ``token`` hashes to (None: no such token)."""
        if not token or len(token) > _MAX_TOKEN:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        found = None
        for stored in self.tokens:  # no early exit: the time does not say which one matched
            if hmac.compare_digest(digest, stored.digest) and found is None:
                found = stored.name
        return found

    def who_by_header(self, peer: str | None, value: str | None) -> str | None:
        """The identity the trusted proxy asserts (None: not from a trusted peer, or none)."""
        if peer is None or value is None:
            return None
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return None
        if not any(address in network for network in self.proxies):
            return None
        value = value.strip()
        return value if _IDENTITY.fullmatch(value) else None

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` is one of the trusted proxies."""
        try:
            address = ipaddress.ip_address(peer or "")
        except ValueError:
            return False
        return any(address in network for network in self.proxies)


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None: none)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
