"""What a browser could be made to do for its user, refused before any route runs (by
server.edge).

- The `Host` header must name the service (ALLOWED_HOSTS): a page whose DNS name is
  rebound to 127.0.0.1 sends its own name, gets 400, and reads nothing.
- A state-changing request (not GET, HEAD or OPTIONS) that a browser sent from another
  origin is refused (403): browsers name the page's origin in `Origin` (or `Referer`).
  One that carries the dashboard's cookie must name the service's own origin: a cookie
  alone proves nothing about who sent the request.
"""

from __future__ import annotations

from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": "80", "https": "443"}


def hostname(host: str) -> str:
    """The name of a Host header's value, without its port (IPv6 in brackets)."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


def origin_of(url: str) -> tuple[str, str] | None:
    """(scheme, host[:port] without a default port) of an Origin or Referer value."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and str(port) != DEFAULT_PORTS.get(parts.scheme):
        name = f"{name}:{port}"
    return parts.scheme, name


def own_host(host: str, scheme: str) -> str:
    """The Host header as origin_of() writes it: lower case, no default port."""
    host = host.lower()
    default = DEFAULT_PORTS.get(scheme)
    if default and host.endswith(f":{default}"):
        return host[: -len(default) - 1]
    return host


def refusal(
    hosts: frozenset[str] | None, method: str, host: str, origin: str, referer: str, cookie: bool
) -> tuple[int, str, str] | None:
    """(status, error code, detail) for a request to refuse, else None; `hosts` None allows
    any Host, `cookie` is whether the request carries the dashboard's session cookie."""
    if hosts is not None and hostname(host.lower()) not in hosts:
        return 400, "bad_host", f"host {host[:100]!r} is not in ALLOWED_HOSTS"
    if method not in SAFE_METHODS and (origin or referer or cookie):
        sender = origin_of(origin or referer) if (origin or referer) != "null" else None
        if sender is None or sender[1] != own_host(host, sender[0]):
            came = f"from {(origin or referer)[:100]!r}" if origin or referer else "unnamed"
            return 403, "cross_origin", f"a request {came} may not change this service"
    return None
