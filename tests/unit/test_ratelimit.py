"""Client addresses behind proxies, and the limiter facade on slowapi's Limiter."""

from __future__ import annotations

import ipaddress

import pytest

from authsvc.config import IPNetwork
from authsvc.errors import RateLimited
from authsvc.ratelimit.keys import client_ip
from authsvc.ratelimit.limiter import RateLimiter, Rule

PROXIES: list[IPNetwork] = [
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("fd00::/8"),
]


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "1.2.3.4", "203.0.113.5"),  # untrusted peer: header ignored
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", "198.51.100.7", "198.51.100.7"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # left part is client-written
        ("10.0.0.2", "198.51.100.7, 10.0.0.9", "198.51.100.7"),  # two trusted hops
        ("10.0.0.2", "10.0.0.3, 10.0.0.9", "10.0.0.2"),  # only proxies: the peer
        ("10.0.0.2", "not-an-ip", "10.0.0.2"),
        ("10.0.0.2", "198.51.100.7, garbage", "10.0.0.2"),
        ("10.0.0.2", " , ", "10.0.0.2"),
        ("fd00::1", "2001:db8::5", "2001:db8::5"),
        (None, "1.2.3.4", "unknown"),
    ],
)
def test_client_ip(peer: str | None, xff: str | None, expected: str) -> None:
    assert client_ip(peer, xff, PROXIES) == expected


def test_no_trusted_proxies_means_the_socket_peer() -> None:
    assert client_ip("10.0.0.2", "198.51.100.7", []) == "10.0.0.2"


def test_limit_then_429_with_retry_after() -> None:
    limiter = RateLimiter(storage_uri="memory://")
    rule = Rule.parse("login_ip", "3/minute")
    for _ in range(3):
        limiter.hit(rule, "a")
    with pytest.raises(RateLimited) as caught:
        limiter.hit(rule, "a")
    assert caught.value.code == "RATE_LIMITED"
    assert caught.value.status_code == 429
    assert 1 <= caught.value.data["retry_after"] <= 60
    limiter.hit(rule, "b")  # another key has its own budget
    limiter.hit(Rule.parse("register_ip", "3/minute"), "a")  # and another rule
    limiter.reset()
    limiter.hit(rule, "a")


def test_disabled_limiter_never_refuses() -> None:
    limiter = RateLimiter(storage_uri="memory://", enabled=False)
    rule = Rule.parse("login_ip", "1/hour")
    for _ in range(5):
        limiter.hit(rule, "a")
