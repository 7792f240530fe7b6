"""Which writes the player takes on the strength of its cookie: those its own pages sent
(services/player/origins.py)."""

from __future__ import annotations

import pytest

from services.player.origins import from_own_origin, needs_own_origin, origin_of

OWN = "https://calls.example.com"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://calls.example.com", OWN),
        ("https://Calls.Example.com:443/login?x=1", OWN),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("http://[::1]:8080/x", "http://[::1]:8080"),
        ("null", None),
        ("", None),
        ("file:///etc/passwd", None),
        ("https://calls.example.com:99999", None),
        ("//calls.example.com", None),
    ],
)
def test_the_origin_of_a_url(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


@pytest.mark.parametrize(
    ("origin", "referer", "accepted"),
    [
        (OWN, None, True),
        (None, f"{OWN}/", True),  # no Origin: the Referer's origin
        ("https://evil.example", None, False),
        ("https://evil.example", f"{OWN}/", False),  # an Origin is never overruled
        ("null", f"{OWN}/", False),  # a sandboxed frame or a redirect's opaque origin
        (None, "https://evil.example/page", False),
        (None, None, False),  # neither: refused
        ("https://calls.example.com.evil.example", None, False),
        ("http://calls.example.com", None, False),  # another scheme is another origin
        ("https://calls.example.com:8443", None, False),
    ],
)
def test_only_the_players_own_origin_is_accepted(
    origin: str | None, referer: str | None, accepted: bool
) -> None:
    assert from_own_origin(origin, referer, OWN) is accepted


@pytest.mark.parametrize(
    ("method", "authorization", "checked"),
    [
        ("GET", None, False),
        ("HEAD", None, False),
        ("POST", None, True),
        ("DELETE", None, True),
        ("put", None, True),
        ("PATCH", None, True),
        ("POST", "Bearer cp_key", False),  # a browser never adds this on its own
        ("POST", "bearer cp_key", False),
        ("POST", "Bearer ", True),
        ("POST", "Basic dXNlcjpwYXNz", True),
    ],
)
def test_writes_need_the_own_origin_unless_a_bearer_key_authenticates_them(
    method: str, authorization: str | None, checked: bool
) -> None:
    assert needs_own_origin(method, authorization) is checked
