"""``idleproof probe-idle``: measure the idle limit really in force between this host and the DB.

The server's ``wait_timeout`` is only one limit: a firewall, NAT or load balancer on the
path may forget an idle connection sooner, and nothing on either end says so. This
measures it: each round opens ``--parallel`` connections, lets each sit idle for a
different length, then sends ``SELECT 1`` on it. The lengths bisect the interval between
the longest idle that survived and the shortest that was killed.

What killed a connection tells the two cases apart:

* the server (``wait_timeout``, a KILL): the probe fails fast, with an EOF or an error
  (2013 "Lost connection", 2006, MySQL 8's 4031), and the thread is gone from the server's
  processlist;
* the network, silently (a NAT entry or firewall state that expired): the probe gets no
  answer at all and times out after ``--probe-timeout``;
* the network, loudly (a middlebox that answers with a reset): a fast error, but the
  server still lists the thread.
"""

from __future__ import annotations

import json
import math
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TextIO

import pymysql

from idleproof.ops.database import connect
from idleproof.settings import Settings

ALIVE = "alive"
SERVER_CLOSE = "server_close"
SILENT_DROP = "silent_drop"
NETWORK_RESET = "network_reset"

EXPLAIN = {
    SERVER_CLOSE: "the server closed them (a fast error or EOF; the thread is gone from its "
    "processlist): its wait_timeout, or a KILL",
    SILENT_DROP: "the network dropped them silently (the probe got no answer within the "
    "probe timeout): a firewall, NAT or load balancer idle limit on the path",
    NETWORK_RESET: "something on the path reset them (a fast error, but the server still "
    "lists the thread): a load balancer or proxy idle limit",
}


class ProbeError(Exception):
    """The probe could not run (for example, no connection at all)."""


@dataclass
class Outcome:
    idle: float  # seconds the connection sat idle before the probe query
    cause: str  # ALIVE or what killed it
    detail: str = ""
    answer_seconds: float = 0.0  # how long the probe query took to succeed or fail


@dataclass
class Report:
    target: str
    max_seconds: float
    parallel: int
    probe_timeout: float
    survived: float  # the longest idle that survived (0: none did)
    killed: float | None  # the shortest idle that was killed (None: none was)
    cause: str | None  # what killed the connection idle for ``killed`` seconds
    configured_idle_timeout: float  # the smaller of DB_IDLE_TIMEOUT, DB_NETWORK_IDLE_TIMEOUT
    suggested_idle_timeout: int | None
    elapsed: float
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False when DB_IDLE_TIMEOUT is above an idle length that was killed."""
        return self.killed is None or self.configured_idle_timeout <= self.killed


def thread_still_listed(settings: Settings, thread_id: int) -> bool | None:
    """Does the server still hold this connection? None when it cannot be asked."""
    try:
        conn = connect(settings)
    except pymysql.err.MySQLError:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", [thread_id]
            )
            row = cur.fetchone()
            return bool(row and row[0])
    finally:
        conn.close()


def hold_idle(
    settings: Settings, idle: float, probe_timeout: float, results: queue.Queue[Outcome | Exception]
) -> None:
    """One connection: idle ``idle`` seconds, then probe it and classify what happened."""
    try:
        conn = connect(settings, read_timeout=probe_timeout)
        with conn.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            row = cur.fetchone()
        thread_id = int(row[0]) if row else 0
    except pymysql.err.MySQLError as exc:
        results.put(ProbeError(f"cannot open a probe connection: {exc}"))
        return
    idle_since = time.monotonic()
    time.sleep(idle)
    idled = time.monotonic() - idle_since
    started = time.monotonic()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        results.put(Outcome(idled, ALIVE, answer_seconds=time.monotonic() - started))
        conn.close()
        return
    except (pymysql.err.MySQLError, OSError) as exc:
        answered = time.monotonic() - started
        detail = str(exc)
    if answered >= probe_timeout * 0.8:
        cause = SILENT_DROP
    else:
        listed = thread_still_listed(settings, thread_id)
        cause = NETWORK_RESET if listed else SERVER_CLOSE
    results.put(Outcome(idled, cause, detail, answered))


def run_round(
    settings: Settings, lengths: list[float], probe_timeout: float, progress: TextIO
) -> list[Outcome]:
    results: queue.Queue[Outcome | Exception] = queue.Queue()
    for idle in lengths:
        threading.Thread(
            target=hold_idle, args=(settings, idle, probe_timeout, results), daemon=True
        ).start()
    started = time.monotonic()
    outcomes: list[Outcome] = []
    errors: list[Exception] = []
    tty = progress.isatty()
    while len(outcomes) + len(errors) < len(lengths):
        try:
            item = results.get(timeout=1.0)
        except queue.Empty:
            if tty:
                waited = time.monotonic() - started
                progress.write(f"\r  idling... {waited:.0f} s of {max(lengths):.0f} s ")
                progress.flush()
            continue
        if isinstance(item, Exception):
            errors.append(item)
            progress.write(f"  {item}\n")
            continue
        outcomes.append(item)
        what = "alive" if item.cause == ALIVE else f"killed: {item.cause} ({item.detail})"
        prefix = "\r" if tty else ""
        progress.write(f"{prefix}  idle {item.idle:7.2f} s -> {what}\n")
        progress.flush()
    if errors and not outcomes:
        raise ProbeError(str(errors[0]))
    return outcomes


def measure(
    settings: Settings,
    max_seconds: float,
    parallel: int,
    probe_timeout: float,
    resolution: float | None,
    progress: TextIO,
) -> Report:
    begun = time.monotonic()
    # Round 1 spends up to max_seconds; the refining rounds share another max_seconds.
    deadline = begun + 2 * max_seconds
    survived, killed, cause = 0.0, None, None
    outcomes: list[Outcome] = []
    lengths = [max_seconds * i / parallel for i in range(1, parallel + 1)]
    round_no = 1
    while lengths:
        elapsed = time.monotonic() - begun
        progress.write(
            f"round {round_no}: {len(lengths)} connections idle for "
            f"{', '.join(f'{x:.2f}' for x in lengths)} s (elapsed {elapsed:.0f} s, "
            f"at most {2 * max_seconds:.0f} s)\n"
        )
        progress.flush()
        found = run_round(settings, lengths, probe_timeout, progress)
        outcomes += found
        for o in found:
            if o.cause != ALIVE and (killed is None or o.idle < killed):
                killed, cause = o.idle, o.cause
        survived = max(
            (o.idle for o in outcomes if o.cause == ALIVE and (killed is None or o.idle < killed)),
            default=0.0,
        )
        if killed is None:
            break  # nothing died up to max_seconds
        step = resolution or max(1.0, 0.05 * survived)
        if killed - survived <= step:
            break
        remaining = deadline - time.monotonic() - probe_timeout
        gap = killed - survived
        lengths = [survived + gap * i / (parallel + 1) for i in range(1, parallel + 1)]
        lengths = [x for x in lengths if x <= remaining]
        round_no += 1
    suggested = None
    if killed is not None and survived >= 1:
        suggested = math.floor(survived)
    return Report(
        target=settings.url_without_password,
        max_seconds=max_seconds,
        parallel=parallel,
        probe_timeout=probe_timeout,
        survived=round(survived, 2),
        killed=None if killed is None else round(killed, 2),
        cause=cause,
        configured_idle_timeout=min(
            settings.idle_timeout, settings.network_idle_timeout or math.inf
        ),
        suggested_idle_timeout=suggested,
        elapsed=round(time.monotonic() - begun, 1),
        outcomes=sorted(outcomes, key=lambda o: o.idle),
    )


def render(r: Report) -> str:
    lines = [f"idle limit on the path to {r.target} (measured in {r.elapsed:g} s):"]
    if r.killed is None:
        lines.append(
            f"  every connection survived up to {r.survived:g} s idle: no limit below that"
        )
        lines.append(
            "  suggestion: keep DB_IDLE_TIMEOUT at the server's wait_timeout (idleproof doctor "
            f"shows it), or probe longer than --max-seconds {r.max_seconds:g}"
        )
        return "\n".join(lines)
    assert r.cause is not None
    lines.append(f"  longest idle that survived: {r.survived:g} s")
    lines.append(f"  shortest idle that was killed: {r.killed:g} s")
    lines.append(f"  killed by: {r.cause}: {EXPLAIN[r.cause]}")
    if r.suggested_idle_timeout is None:
        lines.append("  suggestion: connections die within a second of idling; fix the path first")
    else:
        # The server's own limit, or a middlebox's: each has its setting.
        name = "DB_IDLE_TIMEOUT" if r.cause == SERVER_CLOSE else "DB_NETWORK_IDLE_TIMEOUT"
        lines.append(
            f"  suggestion: {name}={r.suggested_idle_timeout} (the app's idle limit now "
            f"{r.configured_idle_timeout:g}); DB_POOL_RECYCLE then defaults below it"
        )
    if not r.ok:
        lines.append(
            f"  MISMATCH: the app's idle limit ({r.configured_idle_timeout:g} s: DB_IDLE_TIMEOUT, "
            f"DB_NETWORK_IDLE_TIMEOUT) is above an idle length that was killed ({r.killed:g} s)"
        )
    return "\n".join(lines)


def run(
    settings: Settings,
    *,
    max_seconds: float,
    parallel: int,
    probe_timeout: float | None,
    resolution: float | None,
    as_json: bool,
) -> int:
    # A silent drop is told from a slow answer by this wait: SELECT 1 takes milliseconds.
    timeout = probe_timeout or max(2.0, settings.ping_timeout)
    try:
        report = measure(settings, max_seconds, parallel, timeout, resolution, sys.stderr)
    except ProbeError as exc:
        print(f"idleproof probe-idle: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    else:
        print(render(report))
    return 0 if report.ok else 1
