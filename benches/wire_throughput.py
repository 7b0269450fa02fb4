"""Wire throughput: one large result read over Arrow Flight SQL and over pgwire.

Starts a Freshet server (the binary in $FRESHET_BIN, default target/release/freshet), then reads
the same N-row, 4-column result with:

- ADBC Flight SQL, `cursor.fetch_arrow_table()`;
- plain `pyarrow.flight`, `do_get(Ticket(sql)).read_all()`;
- psycopg 3, binary cursor, `fetchall()`;
- psycopg 3, text cursor, `fetchall()`.

Each figure is the wall time from sending the query to holding the whole result in Python.
MB/s divides the result's size as Arrow buffers (the same number for every client, so the
figures compare like rows/s do) by that time.

Usage (from the repository, with the venv of tests/python):
    cargo build --release -p freshet
    .venv/bin/python benches/wire_throughput.py [--rows 10000000] [--repeat 1]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pyarrow.flight as flight

REPO = Path(__file__).resolve().parents[1]
LISTEN = re.compile(r"(\w+) listening on (\S+)")


def query(rows: int) -> str:
    return (
        "SELECT value AS a, value * 2 AS b, CAST(value AS DOUBLE) / 3 AS c, "
        "'row-' || CAST(value % 1000 AS VARCHAR) AS d "
        f"FROM generate_series(1, {rows})"
    )


class Server:
    """A freshet server on free ports, stopped with SIGTERM."""

    def __init__(self, binary: Path, work_dir: Path):
        command = [
            str(binary), "serve", "--data-dir", str(work_dir / "data-dir"),
            "--pg-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0",
        ]
        env = dict(os.environ, RUST_LOG="warn,freshet=info")
        self.process = subprocess.Popen(
            command, cwd=work_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.addresses: dict[str, str] = {}
        self.logs: list[str] = []
        ready = threading.Event()

        def read_logs():
            for line in self.process.stderr:
                self.logs.append(line.rstrip())
                match = LISTEN.search(line)
                if match:
                    self.addresses[match.group(1)] = match.group(2)
                    # The server reports its HTTP address last, once every listener is up.
                    if match.group(1) == "http":
                        ready.set()
            ready.set()

        threading.Thread(target=read_logs, daemon=True).start()
        if not ready.wait(timeout=120) or "http" not in self.addresses:
            self.stop()
            sys.exit("freshet did not start:\n" + "\n".join(self.logs))

    def pg_dsn(self) -> str:
        host, port = self.addresses["pgwire"].rsplit(":", 1)
        return f"host={host} port={port} user=bench dbname=freshet"

    @property
    def flight_uri(self) -> str:
        return "grpc://" + self.addresses["flight"]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def timed(read):
    start = time.perf_counter()
    rows = read()
    return rows, time.perf_counter() - start


def read_adbc(server: Server, sql: str):
    with flight_sql.connect(server.flight_uri, autocommit=True) as conn, conn.cursor() as cur:
        def read():
            cur.execute(sql)
            table = cur.fetch_arrow_table()
            read.nbytes = table.get_total_buffer_size()
            return table.num_rows
        rows, seconds = timed(read)
        return rows, seconds, read.nbytes


def read_pyarrow(server: Server, sql: str):
    client = flight.connect(server.flight_uri)
    def read():
        return client.do_get(flight.Ticket(sql.encode())).read_all().num_rows
    result = timed(read)
    client.close()
    return result


def read_psycopg(server: Server, sql: str, binary: bool):
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        def read():
            with conn.cursor(binary=binary) as cur:
                cur.execute(sql)
                return len(cur.fetchall())
        return timed(read)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per client; the best is reported")
    parser.add_argument("--binary", default=os.environ.get("FRESHET_BIN", str(REPO / "target" / "release" / "freshet")))
    args = parser.parse_args()
    binary = Path(args.binary).resolve()
    build = "release" if "release" in binary.parts else "debug" if "debug" in binary.parts else "unknown"
    sql = query(args.rows)

    with tempfile.TemporaryDirectory() as work:
        server = Server(binary, Path(work))
        try:
            # Warm-up: page in the binary and let every path plan once.
            read_adbc(server, query(1000))
            read_psycopg(server, query(1000), binary=True)

            results = {}
            arrow_bytes = None
            clients = [
                ("flight_adbc_fetch_arrow_table", lambda: read_adbc(server, sql)),
                ("flight_pyarrow_do_get", lambda: read_pyarrow(server, sql)),
                ("pgwire_psycopg_binary", lambda: read_psycopg(server, sql, binary=True)),
                ("pgwire_psycopg_text", lambda: read_psycopg(server, sql, binary=False)),
            ]
            for name, run in clients:
                best = None
                for _ in range(args.repeat):
                    outcome = run()
                    if name == "flight_adbc_fetch_arrow_table":
                        rows, seconds, arrow_bytes = outcome
                    else:
                        rows, seconds = outcome
                    assert rows == args.rows, f"{name} read {rows} rows, expected {args.rows}"
                    best = seconds if best is None else min(best, seconds)
                results[name] = best
        finally:
            server.stop()

    mb = arrow_bytes / 1e6
    print(f"freshet {build} build ({binary}); {args.rows:,} rows x 4 columns; "
          f"result as Arrow: {mb:.1f} MB; best of {args.repeat}")
    print(f"{'client':32} {'seconds':>8} {'rows/s':>12} {'MB/s':>8}")
    report = {"build": build, "rows": args.rows, "arrow_mb": round(mb, 1), "clients": {}}
    for name, seconds in results.items():
        row = {
            "seconds": round(seconds, 2),
            "rows_per_s": int(args.rows / seconds),
            "mb_per_s": round(mb / seconds, 1),
        }
        report["clients"][name] = row
        print(f"{name:32} {row['seconds']:>8.2f} {row['rows_per_s']:>12,} {row['mb_per_s']:>8.1f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
