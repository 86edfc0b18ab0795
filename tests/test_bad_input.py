"""POST /notes against any body, through real Gunicorn and a real MariaDB.

Never a 5xx: a body the app cannot store exactly gets a 400 that says what to change, and
every 201 shows exactly what a later read returns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.models import NOTE_MAX_LENGTH
from harness.gunicorn import GunicornServer

pytestmark = pytest.mark.slow

JSON = "application/json"


@pytest.fixture(scope="module")
def app_url(kit_server: GunicornServer) -> Iterator[str]:
    yield kit_server.url
    log = kit_server.log_path
    assert "Traceback" not in log.read_text(), f"the app logged a traceback; see {log}"


def post(url: str, body: bytes, content_type: str | None = JSON) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return requests.post(f"{url}/notes", data=body, headers=headers, timeout=10)


def read_back(url: str, note_id: int) -> dict[str, object]:
    listed = requests.get(f"{url}/", timeout=10)
    assert listed.status_code == 200, listed.text
    found = [n for n in listed.json()["notes"] if n["id"] == note_id]
    assert found, f"note {note_id} is not in GET /"
    note: dict[str, object] = found[0]
    return note


def assert_stored_as_answered(url: str, created: requests.Response) -> None:
    assert created.headers["Content-Type"] == JSON
    answered = created.json()
    assert read_back(url, answered["id"]) == answered


def assert_json_400(response: requests.Response, message: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"] == JSON
    body = response.json()
    assert body["error"] == "bad_request"
    assert message in body["message"], body["message"]
    assert body["request_id"]


NESTED = b'{"text": ' + b"[" * 1000 + b"]" * 1000 + b"}"


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        # The two: a 500 and a RecursionError traceback; a 500 from PyMySQL.
        (NESTED, JSON, "nested too deeply"),
        (b'{"text": "x\\ud800y"}', JSON, "unpaired surrogate \\ud800 at character 1"),
        (b'{"text": "x\\udc00"}', JSON, "unpaired surrogate \\udc00"),
        # A surrogate as raw bytes (CESU-8) is not UTF-8 at all.
        (b'{"text": "x\xed\xa0\x80"}', JSON, "not valid UTF-8 (byte 11)"),
        (b'{"text": "caf\xe9"}', JSON, "not valid UTF-8"),
        (b'{"text": "caf\xe9"}', f"{JSON}; charset=latin-1", "charset=latin-1"),
        (b'\xef\xbb\xbf{"text": "bom"}', JSON, "not valid JSON"),
        (b'{"text": "a\\u0000b"}', JSON, "control character U+0000"),
        (b'{"text": "a\\u001bb"}', JSON, "control character U+001B"),
        (b'{"text": "a\\u0085b"}', JSON, "control character U+0085"),
        (b'{"text": "a", "text": "b"}', JSON, '"text" appears twice'),
        (b'{"text": "a", "author": "b"}', JSON, 'unknown field "author"'),
        (b'{"text": "a", "n": NaN}', JSON, "NaN is not JSON"),
        (b'{"text": "a", "n": -Infinity}', JSON, "-Infinity is not JSON"),
        (b'{"text": ' + b"9" * 5000 + b"}", JSON, "not valid JSON"),
        (b'{"text": 1e999}', JSON, '"text" is required'),
        (b'{"text": "a"} trailing', JSON, "not valid JSON"),
        (b"", JSON, "not valid JSON"),
        (b'{"text": "hi"}', "text/plain", "Content-Type: application/json (got text/plain)"),
        (b'{"text": "hi"}', None, "(got none)"),
        (b'{"text": "hi"}', "application/x-www-form-urlencoded", "send a JSON object"),
        (b'{"text": "' + "😀".encode() * (NOTE_MAX_LENGTH + 1) + b'"}', JSON, "longer than"),
    ],
    ids=[
        "nested-1000",
        "lone-high-surrogate",
        "lone-low-surrogate",
        "cesu8-surrogate",
        "latin1-bytes",
        "latin1-charset",
        "utf8-bom",
        "nul",
        "escape",
        "c1-control",
        "duplicate-key",
        "unknown-key",
        "nan",
        "minus-infinity",
        "5000-digits",
        "number-text",
        "trailing-data",
        "empty",
        "text-plain",
        "no-content-type",
        "form",
        "too-long-non-bmp",
    ],
)
def test_bad_bodies_get_a_json_400_naming_the_problem(
    app_url: str, body: bytes, content_type: str | None, message: str
) -> None:
    assert_json_400(post(app_url, body, content_type), message)


def test_a_body_over_64_kib_is_a_json_413(app_url: str) -> None:
    response = post(app_url, b'{"text": "' + b"a" * 70_000 + b'"}')
    assert response.status_code == 413
    assert response.json()["error"] == "request_entity_too_large"


@pytest.mark.parametrize(
    "text",
    [
        "😀" * NOTE_MAX_LENGTH,  # 4-byte UTF-8: needs utf8mb4 end to end
        "tab\tnew\nline\r\n",
        "  spaces kept  ",
        "\ufeff\ufffe\U0010ffff\u200b",  # BOM, noncharacters, zero-width: stored as sent
        "e\u0301 vs \u00e9",  # not normalized
    ],
    ids=["500-emoji", "tab-newlines", "spaces", "odd-code-points", "unnormalized"],
)
def test_good_text_is_stored_exactly_as_answered(app_url: str, text: str) -> None:
    for ensure_ascii in (True, False):
        body = json.dumps({"text": text}, ensure_ascii=ensure_ascii).encode()
        created = post(app_url, body, f"{JSON}; charset=UTF-8")
        assert created.status_code == 201, created.text
        assert created.json()["text"] == text
        assert_stored_as_answered(app_url, created)


# Bodies an attacker or a confused client sends: raw bytes, any JSON, and note objects
# whose text is any Unicode (surrogates included), written with and without escapes.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
any_text = st.text(st.characters(exclude_categories=()), max_size=NOTE_MAX_LENGTH + 20)
# Text the app stores, so that many examples reach MariaDB and the read back.
storable_text = st.text(
    st.characters(exclude_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r"),
    min_size=1,
    max_size=NOTE_MAX_LENGTH,
)


@st.composite
def note_bodies(draw: st.DrawFn) -> bytes:
    text = draw(any_text | storable_text)
    payload: object = {"text": text}
    if draw(st.booleans()):
        payload = draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3)) | {
            "text": text
        }
    ensure_ascii = draw(st.booleans())
    dumped = json.dumps(payload, ensure_ascii=ensure_ascii)
    return dumped.encode("utf-8", "surrogatepass")


bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | note_bodies()
    | note_bodies()
)
content_types = st.sampled_from(
    [JSON, JSON, JSON, f"{JSON}; charset=utf-8", "text/plain", None, "application/ld+json"]
)


@settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, content_type=content_types)
def test_any_body_never_gets_a_5xx_and_every_201_is_stored_as_answered(
    app_url: str, body: bytes, content_type: str | None
) -> None:
    response = post(app_url, body, content_type)
    event(f"status {response.status_code}")  # pytest --hypothesis-show-statistics
    assert response.status_code in (201, 400), (response.status_code, response.text[:300])
    assert response.headers["Content-Type"] == JSON
    if response.status_code == 201:
        assert_stored_as_answered(app_url, response)
    else:
        assert response.json()["message"] and response.json()["request_id"]
