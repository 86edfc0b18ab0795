"""Whatever an operator feeds the kit's readers, the answer is a value or one line that says
what to change: never a traceback. Property-based (Hypothesis), no server needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idleproof.ops.environment import read_env_file
from idleproof.ops.errors import UsageError
from idleproof.ops.facts import read_proxy_read_timeout, read_unit, seconds
from idleproof.settings import SETTINGS, Settings, SettingsError

EXAMPLES = settings(max_examples=300, deadline=None)
# Text that looks like configuration, and bytes that may not even be text.
LINES = st.lists(
    st.one_of(
        st.text(max_size=80),
        st.from_regex(r"[A-Z_]{1,20}=[^\n]{0,40}", fullmatch=True),
        st.from_regex(r"proxy_read_timeout [0-9a-z. ]{0,12};", fullmatch=True),
        st.from_regex(r"(TimeoutStopSec|ExecStart)=[^\n]{0,40}", fullmatch=True),
        st.just("[Service]"),
    ),
    max_size=8,
)


def one_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message


_DIR: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def scratch(tmp_path_factory: pytest.TempPathFactory) -> None:
    _DIR.append(tmp_path_factory.mktemp("fuzz"))


def written(content: bytes, name: str) -> Path:
    """One scratch file per reader, rewritten for every example."""
    path = _DIR[0] / name
    path.write_bytes(content)
    return path


@EXAMPLES
@given(st.one_of(st.binary(max_size=300), LINES.map(lambda ls: "\n".join(ls).encode())))
def test_env_file_reader(content: bytes) -> None:
    try:
        env = read_env_file(written(content, "app.env"))
    except UsageError as exc:
        one_line(str(exc))
    else:
        assert all(key.isidentifier() for key in env)


@EXAMPLES
@given(st.one_of(st.binary(max_size=300), LINES.map(lambda ls: "\n".join(ls).encode())))
def test_nginx_and_systemd_readers(content: bytes) -> None:
    for read, name in ((read_proxy_read_timeout, "server.conf"), (read_unit, "x.service")):
        try:
            value = read(written(content, name))
        except UsageError as exc:
            one_line(str(exc))
        else:
            assert value is None or isinstance(value, float | dict)


@EXAMPLES
@given(st.text(max_size=40))
def test_durations(text: str) -> None:
    value = seconds(text)
    assert value is None or value >= 0


@EXAMPLES
@given(
    st.dictionaries(
        st.sampled_from([s.env for s in SETTINGS]),
        st.one_of(st.text(max_size=30), st.integers().map(str), st.floats().map(str)),
    )
)
def test_settings(env: dict[str, str]) -> None:
    try:
        Settings.from_env(env)
    except SettingsError as exc:
        one_line(str(exc))
