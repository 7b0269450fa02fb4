"""Continuous queries: sustained throughput of a 1-minute TUMBLE materialized view, and the
delay from a window's watermark passing to its row reaching a SUBSCRIBE client.

Usage (from the repo root, in the venv; build with `cargo build --release -p freshet` first):
    .venv/bin/python benches/streaming.py [N_EVENTS] [LATENCY_SECONDS]

1. Throughput: a bounded Nexmark bid source of N events (all available at once, event time
   10K events/s) feeds the view of the issue:
       SELECT window_start, window_end, auction AS item_id, count(*) AS clicks, sum(price) AS revenue
       FROM TUMBLE(bids, date_time, INTERVAL '1 minute') GROUP BY window_start, window_end, auction
   The figure is events read by the job divided by wall time from CREATE MATERIALIZED VIEW
   until the job has read every event, and divided by the server's CPU seconds over the same
   span (events per core-second: the job runs on one task).
2. Latency: a paced Nexmark source (RATE events/s, event time = wall time, watermark delay 0)
   feeds a 500 ms TUMBLE view; a psycopg client SUBSCRIBEs. A window [s, e) closes when the
   first event with time >= e is read, which the generator makes available at wall time e, so
   the delay of a row is (wall time the client receives it) - e. Reported as p50 / p99 / max.
Prints one JSON object per measurement.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timezone
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
BINARY = os.environ.get("FRESHET_BIN", str(REPO / "target" / "release" / "freshet"))
TICKS = os.sysconf("SC_CLK_TCK")


def start_server(work: Path):
    process = subprocess.Popen(
        [BINARY, "serve", "--data-dir", str(work / "data"), "--pg-addr", "127.0.0.1:0",
         "--http-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0"],
        cwd=work, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env=dict(os.environ, RUST_LOG="warn,freshet=info"))
    port = None
    for line in process.stderr:
        match = re.search(r"pgwire listening on \S+:(\d+)", line)
        if match:
            port = int(match.group(1))
        if "http listening on" in line:
            break
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
    return process, port


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def job(conn, name):
    for row in conn.execute("SHOW JOBS").fetchall():
        if row[0] == name:
            return {"state": row[2], "events_in": row[4], "late": row[8], "error": row[11]}
    return None


def throughput(conn, pid, n):
    conn.execute(f"CREATE SOURCE bids (WATERMARK FOR date_time AS date_time - INTERVAL '1 second') "
                 f"WITH (connector = 'nexmark', stream = 'bid', events = {n}, seed = 1)")
    bids = conn.execute("SELECT count(*) FROM bids").fetchone()[0]
    cpu0, wall0 = cpu_seconds(pid), time.time()
    conn.execute(
        "CREATE MATERIALIZED VIEW item_clicks_1m AS "
        "SELECT window_start, window_end, auction AS item_id, count(*) AS clicks, sum(price) AS revenue "
        "FROM TUMBLE(bids, date_time, INTERVAL '1 minute') GROUP BY window_start, window_end, auction")
    while True:
        status = job(conn, "public.item_clicks_1m")
        if status["events_in"] >= bids or status["state"] == "failed":
            break
        time.sleep(0.05)
    wall, cpu = time.time() - wall0, cpu_seconds(pid) - cpu0
    rows = conn.execute("SELECT count(*), count(DISTINCT window_start) FROM item_clicks_1m").fetchone()
    print(json.dumps({
        "measure": "tumble_1m_view_throughput", "events": bids, "wall_s": round(wall, 2),
        "events_per_s": int(bids / wall), "server_cpu_s": round(cpu, 2),
        "events_per_core_s": int(bids / cpu) if cpu > 0 else None,
        "view_rows": rows[0], "closed_windows": rows[1], "job": status}), flush=True)
    conn.execute("DROP MATERIALIZED VIEW item_clicks_1m")


def latency(port, seconds, rate=5000):
    with psycopg.connect(f"host=127.0.0.1 port={port} user=bench dbname=freshet", autocommit=True) as conn:
        conn.execute(f"CREATE SOURCE paced (WATERMARK FOR date_time AS date_time) "
                     f"WITH (connector = 'nexmark', stream = 'bid', rate = {rate}, seed = 2)")
        conn.execute("CREATE MATERIALIZED VIEW paced_500ms AS SELECT window_start, window_end, count(*) AS n "
                     "FROM TUMBLE(paced, date_time, INTERVAL '500 milliseconds') GROUP BY window_start, window_end")
    delays = []
    with psycopg.connect(f"host=127.0.0.1 port={port} user=bench dbname=freshet", autocommit=True) as conn:
        started = time.time()
        cursor = conn.cursor()
        for row in cursor.stream("SUBSCRIBE paced_500ms"):
            received = time.time()
            end = row[1].replace(tzinfo=row[1].tzinfo or timezone.utc).timestamp()
            if end > started + 1:  # rows of windows that closed while we were subscribed
                delays.append((received - end) * 1000)
            if received - started > seconds:
                break
    delays.sort()
    pick = lambda q: round(delays[min(len(delays) - 1, int(q * len(delays)))], 1)
    print(json.dumps({"measure": "watermark_to_subscribe_delay_ms", "rate_events_per_s": rate,
                      "windows": len(delays), "p50": pick(0.5), "p99": pick(0.99),
                      "max": round(delays[-1], 1)}), flush=True)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000_000
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    with tempfile.TemporaryDirectory() as tmp:
        process, port = start_server(Path(tmp))
        try:
            with psycopg.connect(f"host=127.0.0.1 port={port} user=bench dbname=freshet", autocommit=True) as conn:
                throughput(conn, process.pid, n)
            latency(port, seconds)
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
