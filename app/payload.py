"""POST /notes bodies: any bytes in, a note text or one line saying what to change.

What is stored is exactly what was sent, so a 201 always shows what a later read returns.
Whatever could not be stored that way, or would be silently dropped, is refused instead:
a body that is not UTF-8 JSON, duplicate or unknown keys, NaN/Infinity, nesting deeper
than Python's parser goes, unpaired surrogates (``"\\ud800"`` parses, but neither UTF-8
nor MariaDB's utf8mb4 can hold it) and control characters other than tab and newlines.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from typing import Any

from app.models import NOTE_MAX_LENGTH

EXAMPLE = '{"text": "hello"}'
ALLOWED_CONTROLS = frozenset("\t\n\r")


class BadNote(ValueError):
    """The body cannot become a note; the message says what to change."""


def parse_note(mimetype: str, mimetype_params: Mapping[str, str], body: bytes) -> str:
    """The note text in a POST /notes body, or :class:`BadNote`."""
    if mimetype != "application/json":
        shown = mimetype[:60] or "none"
        raise BadNote(
            f"send a JSON object such as {EXAMPLE} with Content-Type: application/json "
            f"(got {shown})"
        )
    charset = mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise BadNote(f"send the body as UTF-8 (Content-Type says charset={charset})")
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadNote(f"the body is not valid UTF-8 (byte {exc.start}): send UTF-8") from None
    payload = _load_json(decoded)
    if not isinstance(payload, dict):
        raise BadNote(f"send a JSON object such as {EXAMPLE}")
    unknown = sorted(set(payload) - {"text"})
    if unknown:
        raise BadNote(f'unknown field {json.dumps(unknown[0])}: send only "text"')
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadNote('"text" is required and must be a non-empty string')
    if len(text) > NOTE_MAX_LENGTH:
        raise BadNote(f'"text" is longer than {NOTE_MAX_LENGTH} characters')
    for position, char in enumerate(text):
        if "\ud800" <= char <= "\udfff":
            raise BadNote(
                f'"text" has an unpaired surrogate \\u{ord(char):04x} at character '
                f"{position}: send valid Unicode (a pair of surrogates for one character)"
            )
        if unicodedata.category(char) == "Cc" and char not in ALLOWED_CONTROLS:
            raise BadNote(
                f'"text" has the control character U+{ord(char):04X} at character '
                f"{position}: remove it (tab and newlines are fine)"
            )
    return text


def _load_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except RecursionError:
        raise BadNote(
            f"the body is nested too deeply: send a flat object such as {EXAMPLE}"
        ) from None
    except ValueError as exc:  # JSONDecodeError, and Python's limit on integer digits
        if isinstance(exc, BadNote):
            raise
        reason = str(exc).splitlines()[0]
        raise BadNote(
            f"the body is not valid JSON ({reason}): send a JSON object such as {EXAMPLE}"
        ) from None


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadNote(f"the key {json.dumps(key)} appears twice: send it once")
        result[key] = value
    return result


def _constant(name: str) -> Any:
    raise BadNote(f"{name} is not JSON: send a JSON object such as {EXAMPLE}")
