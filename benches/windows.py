"""Windowed aggregates in Freshet versus the peers, on the same data in one run.

Usage (from the repo root, in the venv; build with `cargo build --release -p freshet` first):
    .venv/bin/python benches/windows.py [N_EVENTS] [--duckdb]

1. Generates N Nexmark-like bid events as JSON lines with ../shared/peers/gen_bids.py.
2. Starts `target/release/freshet` (or $FRESHET_BIN) and runs, over pgwire, the two queries of
   the peer scripts as TUMBLE / HOP over the JSON file (JSON parsing included, as DuckDB's):
   TUMBLE 10 s max(price) and HOP 2 s / 10 s count per auction.
3. Runs `count(*) … GROUP BY window` over the built-in nexmark generator (no parsing).
4. With --duckdb, runs ../shared/peers/duckdb_windows.py on the same file.
Prints one JSON object per system.
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
PEERS = REPO.parent / "shared" / "peers"
BINARY = os.environ.get("FRESHET_BIN", str(REPO / "target" / "release" / "freshet"))


def start_server(work: Path):
    process = subprocess.Popen(
        [BINARY, "serve", "--data-dir", str(work / "data"), "--pg-addr", "127.0.0.1:0",
         "--http-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0", "--allow-path", str(work)],
        cwd=work, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=dict(os.environ, RUST_LOG="warn,freshet=info"))
    port = None
    for line in process.stderr:
        match = re.search(r"pgwire listening on \S+:(\d+)", line)
        if match:
            port = int(match.group(1))
        if "http listening on" in line:
            break
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
    return process, port


def timed(conn, sql):
    started = time.time()
    rows = len(conn.execute(sql).fetchall())
    return time.time() - started, rows


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 3_000_000
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "bids.json"
        subprocess.run([sys.executable, str(PEERS / "gen_bids.py"), str(data), str(n)], check=True)
        process, port = start_server(work)
        try:
            with psycopg.connect(f"host=127.0.0.1 port={port} user=bench dbname=freshet", autocommit=True) as conn:
                conn.execute(
                    f"CREATE EXTERNAL TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, "
                    f"url VARCHAR, date_time TIMESTAMP, extra VARCHAR) STORED AS JSON LOCATION '{data}'")
                queries = {
                    "tumble10s_max_price": "SELECT window_start, max(price), count(*) FROM TUMBLE(bids, date_time, INTERVAL '10 seconds') GROUP BY window_start",
                    "hop2s10s_count_per_auction": "SELECT auction, window_start, count(*) FROM HOP(bids, date_time, INTERVAL '2 seconds', INTERVAL '10 seconds') GROUP BY auction, window_start",
                }
                out = {"system": "freshet-json-file", "events": n}
                for name, sql in queries.items():
                    wall, rows = timed(conn, sql)
                    out[name] = {"wall_s": round(wall, 2), "events_per_s": int(n / wall), "rows": rows}
                print(json.dumps(out), flush=True)

                conn.execute(f"CREATE SOURCE nx WITH (connector = 'nexmark', stream = 'bid', events = {n}, seed = 1)")
                bids = conn.execute("SELECT count(*) FROM nx").fetchone()[0]
                wall, rows = timed(conn, "SELECT window_start, count(*) FROM TUMBLE(nx, date_time, INTERVAL '10 seconds') GROUP BY window_start")
                print(json.dumps({"system": "freshet-nexmark-generator", "bids": bids,
                                  "tumble10s_count": {"wall_s": round(wall, 2), "events_per_s": int(bids / wall), "rows": rows}}), flush=True)
        finally:
            process.terminate()
            process.wait()
        if "--duckdb" in sys.argv:
            result = subprocess.run([sys.executable, str(PEERS / "duckdb_windows.py"), str(data), str(n), "2"],
                                    check=True, capture_output=True, text=True)
            print(result.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
