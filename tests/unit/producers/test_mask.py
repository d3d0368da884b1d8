"""Client IP masking: table of rules, and properties over arbitrary input."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baldur_audit.producers.mask import (
    INVALID_IP,
    MAX_FORWARDED,
    TRUNCATED,
    mask_client_ip,
    mask_ip,
)
from baldur_audit.schemas.event import MAX_ID_CHARS

# What any masked element may look like: nothing else can ever come out.
ELEMENT = re.compile(r"\d{1,3}\.\d{1,3}\.\*\*\*\.\*\*\*|[0-9a-f:]+/48|<invalid-ip>|<truncated>")


def elements(masked: str) -> list[str]:
    return masked.split(", ")


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("192.168.1.2", "192.168.***.***"),
        ("10.0.0.255", "10.0.***.***"),
        ("0.0.0.1", "0.0.***.***"),
        (" 8.8.4.4\t", "8.8.***.***"),
        ("1.2.3.4:8080", "1.2.***.***"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::/48"),
        ("2001:DB8:85A3::1", "2001:db8:85a3::/48"),
        ("2001:db8::1", "2001:db8::/48"),
        ("::1", "::/48"),
        ("[::1]:443", "::/48"),
        ("[2001:db8:85a3::7]", "2001:db8:85a3::/48"),
        ("::ffff:10.1.2.3", "10.1.***.***"),
        ("[::ffff:192.0.2.128]:80", "192.0.***.***"),
        ("fe80::1ff:fe23:4567:890a%eth0", "fe80::/48"),
        ("[fe80::1%25eth0]:8443", "fe80::/48"),
        ("10.1.***.***", "10.1.***.***"),  # already masked: unchanged
        ("2001:db8:85a3::/48", "2001:db8:85a3::/48"),
    ],
)
def test_mask_ip_table(raw: str, masked: str) -> None:
    assert mask_ip(raw) == masked


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "localhost",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3.4:0",
        "1.2.3.4:65536",
        "1.2.3.4:http",
        "[1.2.3.4]:80x",
        "::1:80:",
        "1::2::3",
        "[::1",
        "2001:db8::/64",
        "300.1.***.***",
        "1.2.3.4/32",
        "１.２.３.４",
        "1.2.3.4\x00",
        "1.2.3.4\n",
        "\u202e1.2.3.4",
        "9" * 65,
        "1.2.3.4 5.6.7.8",
        "<script>",
        "<invalid-ip>",
    ],
)
def test_unparsable_becomes_the_marker(raw: str) -> None:
    assert mask_ip(raw) == INVALID_IP


def test_non_string_element_is_the_marker() -> None:
    assert mask_ip(1234) == INVALID_IP  # type: ignore[arg-type]
    assert mask_client_ip(42) == INVALID_IP  # type: ignore[arg-type]
    assert mask_client_ip(["1.2.3.4", None, b"5.6.7.8"]) == (  # type: ignore[list-item]
        "1.2.***.***, <invalid-ip>, <invalid-ip>"
    )


def test_none_stays_none() -> None:
    assert mask_client_ip(None) is None


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("203.0.113.7", "203.0.***.***"),
        ("203.0.113.7, 70.41.3.18, 150.172.238.178", "203.0.***.***, 70.41.***.***, 150.172.***.***"),
        ("203.0.113.7,2001:db8::1", "203.0.***.***, 2001:db8::/48"),
        ("203.0.113.7, unknown, ", "203.0.***.***, <invalid-ip>, <invalid-ip>"),
        (["1.2.3.4", "[::1]:443"], "1.2.***.***, ::/48"),
        (("1.2.3.4",), "1.2.***.***"),
        ([], INVALID_IP),
        ("", INVALID_IP),
    ],
)
def test_forwarded_for_table(raw: str | list[str], masked: str) -> None:
    assert mask_client_ip(raw) == masked


def test_long_forwarded_list_is_truncated_with_a_marker() -> None:
    masked = mask_client_ip(["10.0.0.1"] * (MAX_FORWARDED + 10))
    assert masked is not None
    assert masked.endswith(TRUNCATED)
    assert len(masked) <= MAX_ID_CHARS
    assert elements(masked)[0] == "10.0.***.***"


def test_forwarded_string_beyond_the_element_bound_is_truncated() -> None:
    masked = mask_client_ip(", ".join(["10.0.0.1"] * (MAX_FORWARDED + 1)))
    assert masked is not None and masked.endswith(TRUNCATED)


def test_many_ipv6_elements_stay_within_the_event_limit() -> None:
    masked = mask_client_ip(["ffff:ffff:ffff::1"] * MAX_FORWARDED)
    assert masked is not None
    assert len(masked) <= MAX_ID_CHARS
    assert elements(masked)[-1] == TRUNCATED


def test_huge_hostile_input_is_bounded() -> None:
    masked = mask_client_ip("1.2.3.4" + "\x00" * 1_000_000 + ",")
    assert masked == "<invalid-ip>, <invalid-ip>"
    masked = mask_client_ip("," * 1_000_000)
    assert masked is not None and len(masked) <= MAX_ID_CHARS and masked.endswith(TRUNCATED)


ipv4 = st.ip_addresses(v=4)


@given(ipv4, st.sampled_from(["{}", "{}:8080", " {} ", "[::ffff:{}]", "[::ffff:{}]:1"]))
def test_ipv4_keeps_exactly_the_first_two_octets(address: ipaddress.IPv4Address, spelling: str) -> None:
    octets = str(address).split(".")
    masked = mask_ip(spelling.format(address))
    assert masked == f"{octets[0]}.{octets[1]}.***.***"
    assert str(address) not in masked


@given(st.ip_addresses(v=6))
def test_ipv6_keeps_at_most_48_bits(address: ipaddress.IPv6Address) -> None:
    masked = mask_ip(str(address))
    if address.ipv4_mapped is not None or address.sixtofour is not None:
        # both carry a whole IPv4 address: masked as that IPv4 (/16), see producers/mask.py
        assert masked.endswith(".***.***")
        return
    network = ipaddress.IPv6Network(masked)
    assert network.prefixlen == 48
    assert address in network
    assert int(network.network_address) & ((1 << 80) - 1) == 0


@given(st.text(max_size=300))
def test_mask_ip_never_raises_and_never_echoes(text: str) -> None:
    masked = mask_ip(text)
    assert ELEMENT.fullmatch(masked)


@given(
    st.one_of(
        st.text(max_size=2000),
        st.lists(st.one_of(st.text(max_size=80), st.none(), st.integers()), max_size=50),
        st.lists(st.ip_addresses().map(str), max_size=50),
    )
)
def test_mask_client_ip_output_is_only_masked_forms(value: object) -> None:
    masked = mask_client_ip(value)  # type: ignore[arg-type]
    assert masked is not None
    assert len(masked) <= MAX_ID_CHARS
    assert all(ELEMENT.fullmatch(element) for element in elements(masked))


@given(st.lists(ipv4, min_size=1, max_size=40), st.sampled_from([",", ", ", " , "]))
def test_forwarded_for_never_contains_the_last_two_octets(
    addresses: list[ipaddress.IPv4Address], sep: str
) -> None:
    masked = mask_client_ip(sep.join(str(address) for address in addresses))
    assert masked is not None
    for element in elements(masked):
        assert element == TRUNCATED or element.endswith(".***.***")
        assert element.count(".") <= 3
    kept = [element for element in elements(masked) if element != TRUNCATED]
    assert kept == [".".join(str(a).split(".")[:2]) + ".***.***" for a in addresses[: len(kept)]]


_OCTETS = st.integers(0, 300).map(str) | st.from_regex(r"0[0-9]{1,3}", fullmatch=True) | st.just("")
_DOTTED = st.tuples(_OCTETS, _OCTETS, _OCTETS, _OCTETS, st.sampled_from(["", " ", "\t", " \t"])).map(
    lambda parts: f"{parts[4]}{'.'.join(parts[:4])}{parts[4]}"
)


def _parsed_as_ipaddress_does(text: str) -> str:
    try:
        address = ipaddress.IPv4Address(text.strip(" \t"))
    except ValueError:
        return INVALID_IP
    first, second = str(address).split(".")[:2]
    return f"{first}.{second}.***.***"


@given(_DOTTED)
def test_dotted_ipv4_is_masked_as_the_ipaddress_module_parses_it(text: str) -> None:
    """The shortcut for a plain dotted address (no ipaddress call) accepts and masks exactly
    what ipaddress accepts: no leading zeros, octets up to 255."""
    assert mask_ip(text) == _parsed_as_ipaddress_does(text)
    assert mask_client_ip(text) == mask_ip(text)


@given(st.text(max_size=70))
def test_one_address_masks_as_a_forwarded_list_of_one(text: str) -> None:
    assert mask_client_ip(text.replace(",", "")) == mask_client_ip([text.replace(",", "")])
