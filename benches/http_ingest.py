"""Event ingest over HTTP into an `http` source, durability on (every answer waits for the
log's fdatasync; concurrent requests share one sync).

Usage (from the repo root, in the venv; build with `cargo build --release -p freshet` first):
    .venv/bin/python benches/http_ingest.py [SECONDS_PER_CASE]

For batches of 1, 100 and 10 000 events, with 1 client and with several concurrent clients
(each a keep-alive HTTP/1.1 connection sending NDJSON bodies back to back), the figure is
events acknowledged per second of wall time. After each case the source's row count is
checked against the events acknowledged. Prints one JSON object per case. The client is
Python's http.client on the same machine, so small batches measure the client too.
"""
import http.client
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


def start_server(work: Path):
    process = subprocess.Popen(
        [BINARY, "serve", "--data-dir", str(work / "data"), "--pg-addr", "127.0.0.1:0",
         "--http-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0"],
        cwd=work, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env=dict(os.environ, RUST_LOG="warn,freshet=info"))
    pg_port = http_port = None
    for line in process.stderr:
        match = re.search(r"pgwire listening on \S+:(\d+)", line)
        if match:
            pg_port = int(match.group(1))
        match = re.search(r"http listening on \S+:(\d+)", line)
        if match:
            http_port = int(match.group(1))
            break
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
    return process, pg_port, http_port


def body(first: int, size: int) -> bytes:
    return "".join(
        f'{{"user_id": {i % 1000}, "item_id": {i % 5000}, "action": "view", '
        f'"ts": "2026-11-01T10:00:00Z"}}\n'
        for i in range(first, first + size)
    ).encode()


def client(port: int, source: str, size: int, deadline: float, first: int, out: list):
    connection = http.client.HTTPConnection("127.0.0.1", port)
    payload = body(first, size)
    events = requests = 0
    while time.monotonic() < deadline:
        connection.request("POST", f"/v1/sources/{source}/events", payload,
                           {"Content-Type": "application/x-ndjson"})
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise SystemExit(f"refused: {response.status} {answer!r}")
        events += json.loads(answer)["accepted"]
        requests += 1
    out.append((events, requests))


def run_case(port, conn, source, size, clients, seconds):
    conn.execute(f"CREATE SOURCE {source} (user_id BIGINT, item_id BIGINT, action TEXT, "
                 f"ts TIMESTAMP) WITH (connector = 'http', max_log_bytes = '8 GiB', "
                 f"segment_bytes = '256 MiB')")
    results = []
    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(port, source, size, start + seconds,
                                                     n * 10_000_000, results))
               for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    events = sum(e for e, _ in results)
    requests = sum(r for _, r in results)
    stored = conn.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
    assert stored == events, (stored, events)
    print(json.dumps({
        "bench": "http_ingest", "batch_events": size, "clients": clients,
        "events_per_s": round(events / elapsed), "requests_per_s": round(requests / elapsed),
        "events": events, "seconds": round(elapsed, 2), "durable": True,
    }), flush=True)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    with tempfile.TemporaryDirectory() as tmp:
        process, pg_port, http_port = start_server(Path(tmp))
        try:
            with psycopg.connect(f"host=127.0.0.1 port={pg_port} user=bench dbname=freshet",
                                 autocommit=True) as conn:
                cases = [(1, 1), (1, 16), (100, 1), (100, 4), (10_000, 1), (10_000, 2)]
                for n, (size, clients) in enumerate(cases):
                    run_case(http_port, conn, f"ingest_{n}", size, clients, seconds)
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
