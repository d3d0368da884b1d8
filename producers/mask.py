"""Client IP masking: the ledger keeps a network, never a person's address.

A client IP is masked before the event is encoded, so the raw address never
leaves the producing process (design invariant 6). The masked forms are:

- IPv4 keeps its first two octets: ``192.168.7.9`` -> ``192.168.***.***``.
- IPv6 keeps its first 48 bits, written as the ``/48`` network it belongs to:
  ``2001:db8:85a3:8d3:1319:8a2e:370:7348`` -> ``2001:db8:85a3::/48``. The result is
  a valid network in canonical (RFC 5952) form, so forensic queries can group by it,
  and it cannot be mistaken for a full address.
- An IPv6 address that carries a whole IPv4 address within its first 48 bits is masked as
  that IPv4: IPv4-mapped (``::ffff:10.1.2.3``) and 6to4 (``2002:c0a8:0107::1`` carries
  192.168.1.7, so its /48 would reveal it) -> ``192.168.***.***``.
- Ports (``1.2.3.4:8080``, ``[::1]:443``), brackets and zone ids (``fe80::1%eth0``)
  are stripped.
- Anything that does not parse becomes the fixed marker ``<invalid-ip>``: the input
  is never echoed, and no input (huge, control characters, unicode) raises.
- A list, or an ``X-Forwarded-For`` string ``"a, b, c"``, is masked element by element
  and joined with ``", "``. At most :data:`MAX_FORWARDED` elements of at most
  :data:`MAX_ELEMENT_CHARS` characters each are read, and the joined result is kept
  within the event's limit for ``client_ip``; whatever is dropped is replaced by one
  trailing ``<truncated>`` marker. The leftmost elements (the original client) are kept.

Values that are already masked (``10.1.***.***``, ``2001:db8::/48``) pass unchanged,
so masking twice is harmless.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from baldur_audit.schemas.event import MAX_ID_CHARS

INVALID_IP = "<invalid-ip>"
TRUNCATED = "<truncated>"
MAX_FORWARDED = 32
MAX_ELEMENT_CHARS = 64
_SEPARATOR = ", "

# Characters any accepted spelling may contain; zone ids are interface names or numbers.
_ALLOWED = re.compile(r"[0-9A-Za-z.:%\[\]_-]+", re.ASCII)
_BRACKETED = re.compile(r"\[([^\]]+)\](?::(\d{1,5}))?", re.ASCII)
_IPV4_WITH_PORT = re.compile(r"([0-9.]+):(\d{1,5})", re.ASCII)
_MASKED_IPV4 = re.compile(r"(\d{1,3})\.(\d{1,3})\.\*\*\*\.\*\*\*", re.ASCII)
#: A dotted IPv4 address as ``ipaddress`` accepts it (no leading zeros), octets still unchecked.
_OCTET = r"(0|[1-9][0-9]{0,2})"
_PLAIN_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}", re.ASCII)


def _mask_ipv4(address: ipaddress.IPv4Address) -> str:
    first, second = str(address).split(".")[:2]
    return f"{first}.{second}.***.***"


def _mask_ipv6(address: ipaddress.IPv6Address) -> str:
    carried = address.ipv4_mapped or address.sixtofour
    if carried is not None:
        return _mask_ipv4(carried)
    network = ipaddress.IPv6Network((int(address) >> 80 << 80, 48))
    return network.compressed


def _already_masked(text: str) -> str | None:
    """``text`` itself if it is one of our masked forms, else None."""
    match = _MASKED_IPV4.fullmatch(text)
    if match:
        if all(int(octet) <= 255 and str(int(octet)) == octet for octet in match.groups()):
            return text
        return None
    if text.endswith("/48"):
        try:
            network = ipaddress.IPv6Network(text, strict=True)
        except ValueError:
            return None
        if network.network_address.sixtofour is not None:  # 2002:c0a8:107::/48 is no mask
            return _mask_ipv4(network.network_address.sixtofour)
        return network.compressed
    return None


def _valid_port(port: str | None) -> bool:
    return port is None or 0 < int(port) <= 65535


def mask_ip(value: str) -> str:
    """Mask one IP address (optionally with port, brackets or zone id); never raises.

    Returns the masked form described in the module docstring, or
    :data:`INVALID_IP` for anything that is not an IP address.
    """
    if not isinstance(value, str) or len(value) > MAX_ELEMENT_CHARS:
        return INVALID_IP
    text = value.strip(" \t")
    plain = _PLAIN_IPV4.fullmatch(text)
    if plain is not None:
        # The commonest case, without ipaddress: the same result as parsing it there. Octets
        # have no leading zero, so a 3-digit one compares with "255" as text.
        first, second, third, fourth = plain.groups()
        if all(len(octet) < 3 or octet <= "255" for octet in (first, second, third, fourth)):
            return f"{first}.{second}.***.***"
    masked = _already_masked(text)
    if masked is not None:
        return masked
    if not text or not _ALLOWED.fullmatch(text):
        return INVALID_IP
    host = text
    bracketed = _BRACKETED.fullmatch(text)
    if bracketed:
        host, port = bracketed.groups()
        if not _valid_port(port):
            return INVALID_IP
    elif text.count(":") == 1:  # an IPv6 address always has at least two colons
        with_port = _IPV4_WITH_PORT.fullmatch(text)
        if not with_port or not _valid_port(with_port.group(2)):
            return INVALID_IP
        host = with_port.group(1)
    host = host.split("%", 1)[0]  # the zone id names a local interface: not kept
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return INVALID_IP
    if isinstance(address, ipaddress.IPv4Address):
        return _mask_ipv4(address)
    return _mask_ipv6(address)


def _join_bounded(masked: list[str], dropped: bool) -> str:
    """Join masked elements, keeping the result within the event's ``client_ip`` limit."""
    kept: list[str] = []
    length = 0
    reserve = len(_SEPARATOR) + len(TRUNCATED)
    for index, element in enumerate(masked):
        added = len(element) + (len(_SEPARATOR) if kept else 0)
        is_last = index == len(masked) - 1 and not dropped
        if length + added + (0 if is_last else reserve) > MAX_ID_CHARS:
            dropped = True
            break
        kept.append(element)
        length += added
    if dropped:
        kept.append(TRUNCATED)
    return _SEPARATOR.join(kept)


def mask_client_ip(value: str | Sequence[str] | None) -> str | None:
    """Mask a client IP, an ``X-Forwarded-For`` string or a list of IPs; never raises.

    ``None`` stays ``None``; any other type that is neither a string nor a list
    or tuple becomes :data:`INVALID_IP`.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if "," not in value:  # one address: what the join below would return
            return mask_ip(value)
        # maxsplit bounds the work on a huge string: the remainder lands in one last part.
        parts: Sequence[object] = value.split(",", MAX_FORWARDED)
    elif isinstance(value, list | tuple):
        parts = value[: MAX_FORWARDED + 1]
    else:
        return INVALID_IP
    dropped = len(parts) > MAX_FORWARDED
    masked = [mask_ip(part) if isinstance(part, str) else INVALID_IP for part in parts[:MAX_FORWARDED]]
    if not masked:
        return INVALID_IP
    return _join_bounded(masked, dropped)
