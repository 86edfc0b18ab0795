"""The one shape of every error body the app sends."""

from __future__ import annotations

from flask import Response, jsonify, request

from app.proxy import client_address, request_id


def error_body(error: str, message: str) -> Response:
    """What failed, what to change, and the id that finds the request in every log."""
    return jsonify(error=error, message=message, request_id=request_id(request.environ))


def request_tag() -> str:
    """For the app's log lines: the same id and client address as the access log."""
    return f"request_id={request_id(request.environ)} client={client_address(request.environ)}"
