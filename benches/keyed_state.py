"""Keyed state: one updating aggregate (GROUP BY k) fed the same N events with K distinct keys,
for several K. The goal of keyed state is that the cost of an event does not depend on K.

Usage (from the repo root, in the venv; FRESHET_BIN selects the binary, e.g. a release build
or a copy of a build of another branch to compare with):
    .venv/bin/python benches/keyed_state.py [N_EVENTS] [K,K,...] [RATE]

Without RATE every event is available at once, so micro-batches are full rounds (262 144
events) touching a large share of the keys. With RATE (events/s, datagen's `rate`), events
arrive paced and micro-batches are small (a few thousand events), the steady state of a live
view: there the cost of a micro-batch that merges the whole state grows with K.

For each K a fresh server runs (so peak RSS is per K):
    CREATE SOURCE g (k BIGINT, v BIGINT) WITH (connector = 'datagen', events = N, seed = 1,
        "fields.k.min" = 0, "fields.k.max" = K - 1, "fields.v.max" = 1000)
    CREATE MATERIALIZED VIEW agg WITH (checkpoint_interval = '1h') AS
        SELECT k, count(*) AS n, sum(v) AS total FROM g GROUP BY k
The throughput is N divided by the server's CPU seconds (user + system, from /proc) from
CREATE MATERIALIZED VIEW until the job has read every event, and by wall time over the same
span. Then `DROP MATERIALIZED VIEW` stops the job, whose last checkpoint writes the whole
state: its bytes are the state file's size, its seconds are timed by the server (a debug log
line, when the server logs `freshet_sql::streaming` at debug). Peak RSS is the server's VmHWM.
Prints one JSON object per K.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
BINARY = os.environ.get("FRESHET_BIN", str(REPO / "target" / "release" / "freshet"))
TICKS = os.sysconf("SC_CLK_TCK")


def start_server(work: Path, log_lines: list):
    process = subprocess.Popen(
        [BINARY, "serve", "--data-dir", str(work / "data"), "--pg-addr", "127.0.0.1:0",
         "--http-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0"],
        cwd=work, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env=dict(os.environ, RUST_LOG="warn,freshet=info,freshet_sql::streaming=debug"))
    port = None
    for line in process.stderr:
        match = re.search(r"pgwire listening on \S+:(\d+)", line)
        if match:
            port = int(match.group(1))
        if "http listening on" in line:
            break
    threading.Thread(target=lambda: [log_lines.append(l) for l in process.stderr], daemon=True).start()
    return process, port


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return None


def job(conn, name):
    for row in conn.execute("SHOW JOBS").fetchall():
        if row[0] == name:
            return {"state": row[2], "events_in": row[4], "error": row[11]}
    return None


def run(n, keys, rate=None):
    with tempfile.TemporaryDirectory() as tmp:
        logs = []
        process, port = start_server(Path(tmp), logs)
        try:
            dsn = f"host=127.0.0.1 port={port} user=bench dbname=freshet"
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    f"CREATE SOURCE g (k BIGINT, v BIGINT) WITH (connector = 'datagen', "
                    f"events = {n}, seed = 1, {f'rate = {rate},' if rate else ''} \"fields.k.min\" = 0, \"fields.k.max\" = {keys - 1}, "
                    f"\"fields.v.max\" = 1000)")
                rss_before = peak_rss_mb(process.pid)
                cpu0, wall0 = cpu_seconds(process.pid), time.time()
                conn.execute("CREATE MATERIALIZED VIEW agg WITH (checkpoint_interval = '1h') AS "
                             "SELECT k, count(*) AS n, sum(v) AS total FROM g GROUP BY k")
                while True:
                    status = job(conn, "public.agg")
                    if status["events_in"] >= n or status["state"] == "failed":
                        break
                    time.sleep(0.05)
                wall, cpu = time.time() - wall0, cpu_seconds(process.pid) - cpu0
                distinct, total = conn.execute("SELECT count(*), sum(n) FROM agg").fetchone()
                state_dir = Path(tmp) / "data" / "streams" / "public.agg"
                conn.execute("DROP MATERIALIZED VIEW agg")
            # The last checkpoint was written when the job stopped; DROP removes the files
            # afterwards, so its size comes from the log (or is missing on a server without it).
            deadline = time.time() + 60
            while time.time() < deadline and not any("state_bytes_written" in l for l in logs):
                time.sleep(0.2)
            checkpoint = None
            for line in logs:
                if "checkpoint written" in line and "state_bytes_written" in line:
                    fields = dict(re.findall(r"(\w+)=(\S+)", line))
                    checkpoint = {k: fields.get(k) for k in
                                  ("state_keys", "state_bytes_in_memory", "state_bytes_written",
                                   "checkpoint_ms")}
            return {
                "measure": "updating_aggregate_keys", "events": n, "keys": keys, "rate": rate,
                "distinct_keys_seen": distinct, "events_counted": int(total or 0),
                "wall_s": round(wall, 2), "server_cpu_s": round(cpu, 2),
                "events_per_cpu_s": int(n / cpu) if cpu > 0 else None,
                "events_per_s": int(n / wall), "job": status,
                "peak_rss_mb": peak_rss_mb(process.pid), "rss_before_view_mb": rss_before,
                "last_checkpoint": checkpoint, "state_dir_existed": state_dir.exists(),
            }
        finally:
            process.terminate()
            process.wait()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    ks = [int(k) for k in sys.argv[2].split(",")] if len(sys.argv) > 2 else [1_000, 100_000, 1_000_000]
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else None
    for keys in ks:
        print(json.dumps(run(n, keys, rate)), flush=True)


if __name__ == "__main__":
    main()
