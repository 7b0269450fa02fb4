"""Continuous queries seen by real clients: psycopg's cursor.stream(), psql's
`COPY (SUBSCRIBE …) TO STDOUT` on a terminal, and pyarrow.flight, each receiving rows while the
windows close (not at the end)."""

import os
import pty
import select
import shutil
import signal
import subprocess
import time

import psycopg
import pyarrow.flight as flight
import pytest

SETUP = [
    # A generator paced at 200 events/s whose event time is the wall-clock time.
    "CREATE SOURCE ticks (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '200 milliseconds') "
    "WITH (connector = 'datagen', rate = 200)",
    "CREATE MATERIALIZED VIEW per_second AS "
    "SELECT window_start, window_end, count(*) AS n FROM TUMBLE(ticks, ts, INTERVAL '1 second') "
    "GROUP BY window_start, window_end",
]


def setup(server):
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        for sql in SETUP:
            conn.execute(sql)


def test_psycopg_stream_receives_windows_as_they_close(server):
    setup(server)
    arrivals = []
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        started = time.time()
        for row in conn.cursor().stream("SUBSCRIBE per_second"):
            arrivals.append((time.time(), row))
            if len(arrivals) >= 4 or time.time() - started > 30:
                break
    assert len(arrivals) >= 4
    starts = [row[0] for _, row in arrivals]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    # Live: the last rows came about a second apart, not all at once at the end.
    gaps = [b[0] - a[0] for a, b in zip(arrivals[-3:], arrivals[-2:])]
    assert all(gap > 0.5 for gap in gaps), gaps
    # Full windows after the first one hold 200 events each (the generator's rate).
    assert all(row[2] == 200 for _, row in arrivals[1:]), arrivals


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_psql_copy_subscribe_prints_rows_live(server):
    setup(server)
    host, port = server.addresses["pgwire"].rsplit(":", 1)
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp("psql", ["psql", "-h", host, "-p", port, "-U", "pytest", "-d", "freshet",
                           "-c", "COPY (SUBSCRIBE per_second) TO STDOUT"])
    output = b""
    lines_at = []
    started = time.time()
    try:
        while time.time() - started < 30 and len(lines_at) < 3:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                output += chunk
                while len(lines_at) < output.count(b"\n"):
                    lines_at.append(time.time())
    finally:
        os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    lines = output.decode(errors="replace").splitlines()
    assert len(lines) >= 3, output
    assert all(len(line.split("\t")) == 3 for line in lines[:3]), lines
    # psql printed the later rows about a second apart: it received them live.
    assert lines_at[2] - lines_at[1] > 0.5, lines_at


def test_flight_do_get_streams_a_subscription(server):
    setup(server)
    client = flight.connect(server.flight_uri)
    reader = client.do_get(flight.Ticket(b"SUBSCRIBE per_second"))
    arrivals = []
    started = time.time()
    while len(arrivals) < 3 and time.time() - started < 30:
        chunk = reader.read_chunk()
        arrivals.append((time.time(), chunk.data.num_rows))
    assert len(arrivals) == 3
    assert arrivals[2][0] - arrivals[1][0] > 0.5, arrivals
    reader.cancel()
    # The server stays usable and the subscription's resources go away with the stream.
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psycopg_applies_an_updating_views_changes(server):
    """SUBSCRIBE to an updating view: the rows once, then only changes, with an `op` column;
    applied here they give the view's rows and the batch query's."""
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        conn.execute("CREATE SOURCE paced (k BIGINT) WITH (connector = 'datagen', rate = 500, "
                     "events = 2000, seed = 5, \"fields.k.min\" = 0, \"fields.k.max\" = 19)")
        conn.execute("CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n FROM paced GROUP BY k")
    state = {}
    ops = set()
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        cursor = conn.cursor()
        started = time.time()
        for k, n, op in cursor.stream("SUBSCRIBE per_k"):
            ops.add(op)
            if op in ("insert", "update_after"):
                assert k not in state, (k, op)
                state[k] = n
            else:
                assert state.pop(k) == n, (k, n, op)
            if sum(state.values()) == 2000 or time.time() - started > 60:
                break
    assert sum(state.values()) == 2000
    assert ops <= {"insert", "update_before", "update_after"} and "update_after" in ops
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        assert dict(conn.execute("SELECT k, n FROM per_k").fetchall()) == state
        assert dict(conn.execute("SELECT k, count(*) FROM paced GROUP BY k").fetchall()) == state
    # Flight SQL carries the same column: the snapshot comes first, all inserts.
    client = flight.connect(server.flight_uri)
    reader = client.do_get(flight.Ticket(b"SUBSCRIBE per_k"))
    chunk = reader.read_chunk().data
    reader.cancel()
    assert chunk.schema.names == ["k", "n", "op"]
    assert set(chunk.column("op").to_pylist()) == {"insert"}
    assert dict(zip(chunk.column("k").to_pylist(), chunk.column("n").to_pylist())) == state
