"""What the proxy in front tells the app: the client's address and the request's id.

nginx sends ``X-Forwarded-For: <the address it saw>`` and ``X-Request-Id: <$request_id>``.
:class:`ProxyHeaders` (installed by gunicorn.conf.py with Gunicorn's own
``forwarded_allow_ips``) makes the first the request's ``REMOTE_ADDR`` when the peer is a
trusted proxy, so the access log and the app's log lines name the client instead of nginx
(or nothing, behind a unix socket). :func:`request_id` gives every request an id that
nginx's log, Gunicorn's access line, the app's log lines and every error body share.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

# Where the id is kept in the WSGI environ. Gunicorn's access log reads environ keys
# lowercased: %({idle_proof.request_id}e)s.
REQUEST_ID_KEY = "idle_proof.request_id"

# nginx's $request_id is 32 hex digits; accept any short token, so another proxy's ids
# work too, but never a value that could forge a log line or a JSON body.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def request_id(environ: MutableMapping[str, Any]) -> str:
    """The id nginx gave this request, or a new one when there is none (or it is bogus)."""
    rid: str | None = environ.get(REQUEST_ID_KEY)
    if rid is None:
        sent = environ.get("HTTP_X_REQUEST_ID", "")
        rid = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        environ[REQUEST_ID_KEY] = rid
    return rid


def client_address(environ: Mapping[str, Any]) -> str:
    """The client's address as the app knows it ("-" on a unix socket without a proxy)."""
    return str(environ.get("REMOTE_ADDR") or "-")


class TrustedPeers:
    """Gunicorn's forwarded_allow_ips: addresses and networks, or "*" for any peer.

    A unix socket peer (no address) is always trusted, as Gunicorn does: only what may
    open the socket file (nginx) can connect.
    """

    def __init__(self, allowed: Iterable[str]) -> None:
        entries = [entry.strip() for entry in allowed if entry.strip()]
        self.any = "*" in entries
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries if e != "*"]

    def __contains__(self, peer: str) -> bool:
        if not peer or self.any:
            return True
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class ProxyHeaders:
    """WSGI middleware: REMOTE_ADDR from a trusted proxy's X-Forwarded-For, and an id.

    Only the last X-Forwarded-For entry is used: it is the one the trusted proxy added
    (the kit's nginx sends only that one); anything before it came from the client.
    """

    def __init__(self, app: WSGIApp, trusted: Iterable[str]) -> None:
        self.app = app
        self.trusted = TrustedPeers(trusted)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        peer = environ.get("REMOTE_ADDR", "")
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded and peer in self.trusted:
            last = forwarded.rsplit(",", 1)[-1].strip()
            with contextlib.suppress(ValueError):  # not an address: keep the peer's
                environ["REMOTE_ADDR"] = str(ipaddress.ip_address(last))
        request_id(environ)
        return self.app(environ, start_response)
