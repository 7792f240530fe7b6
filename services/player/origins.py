"""Which requests the player's own pages sent: a browser names the page a request comes from
in `Origin` (or, when it leaves that out, in `Referer`), and a cross-site form or script
cannot change either. Writes authenticated by the cookie are accepted only from the player's
own origin; an API client's Bearer key is not sent by a browser on its own, so it needs none."""

from __future__ import annotations

from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL, the port left out when it is the
    scheme's default; None for anything else (the opaque origin `null` included)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None or port == DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def needs_own_origin(method: str, authorization: str | None) -> bool:
    """Whether a request may change something on the strength of a cookie alone."""
    if method.upper() in SAFE_METHODS:
        return False
    scheme, _, credentials = (authorization or "").partition(" ")
    return not (scheme.lower() == "bearer" and credentials.strip())


def from_own_origin(origin: str | None, referer: str | None, own_origin: str) -> bool:
    """Whether the browser says the request comes from `own_origin`: by its `Origin`, or by
    its `Referer` when it sent no `Origin`; neither is a refusal."""
    claimed = origin if origin is not None else referer
    return claimed is not None and origin_of(claimed) == own_origin
