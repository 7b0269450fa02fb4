"""`recommend(model, user, 10)` latency over pgwire, at 1.7k and 100k items, rank 32.

Usage (from the repo root, in the venv; build with `cargo build --release -p freshet` first):
    .venv/bin/python benches/recommend_latency.py [--repeats N] [--calls N]
FRESHET_BIN picks another binary (e.g. an older build, for a before/after in one run).

1. Generates implicit-feedback clicks (40 random items per user, every item clicked at least
   once so the model knows all of them): 943 users × 1682 items (MovieLens-100k's shape) and
   5000 users × 100 000 items. Trains both with rank 32, 5 iterations, alpha 10.
2. For each model, one psycopg connection, one query at a time, in three ways:
   - `simple`: the query text with the user inlined (simple query protocol), a different
     sampled user per call;
   - `prepared`: the same texts with `prepare=True` (Parse once per text, then Bind/Execute),
     cycling over 50 users; the first round (which prepares) is not counted;
   - `param`: `recommend('m', %s, 10)` with the user as a parameter (extended protocol).
   Client-side wall time per call, rows fetched included, in milliseconds.
3. `--repeats N` runs every measurement N times on the same server and models and reports
   the best repeat (lowest p99) and the spread of p50 and p99 over the repeats.
Prints one JSON object per measurement.
"""
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import start_server  # noqa: E402


def write_clicks(path: Path, users: int, items: int, per_user: int, seed: int):
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.write("user_id,item_id,clicks\n")
        for u in range(users):
            for _ in range(per_user):
                f.write(f"{u},{rng.randrange(items)},{rng.randint(1, 3)}\n")
        for i in range(items):
            f.write(f"{rng.randrange(users)},{i},1\n")


def percentile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def timed(call):
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def measure(conn, name, users, mode, calls, rng):
    sql = f"SELECT * FROM recommend('{name}', {{}}, 10)"
    latencies = []
    if mode == "simple":
        for u in rng.sample(range(users), min(calls, users)):
            latencies.append(timed(lambda: conn.execute(sql.format(u)).fetchall()))
    elif mode == "prepared":
        cycle = rng.sample(range(users), 50)
        rounds = max(2, calls // len(cycle) + 1)
        for n in range(rounds):
            for u in cycle:
                ms = timed(lambda: conn.execute(sql.format(u), prepare=True).fetchall())
                if n > 0:
                    latencies.append(ms)
    elif mode == "param":
        query = f"SELECT * FROM recommend('{name}', %s, 10)"
        for u in rng.sample(range(users), min(calls, users)):
            latencies.append(timed(lambda: conn.execute(query, (u,)).fetchall()))
    latencies.sort()
    return latencies


def main():
    repeats = int(sys.argv[sys.argv.index("--repeats") + 1]) if "--repeats" in sys.argv else 3
    calls = int(sys.argv[sys.argv.index("--calls") + 1]) if "--calls" in sys.argv else 500
    shapes = {"1.7k": (943, 1682), "100k": (5000, 100_000)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        process, port = start_server(work)
        try:
            with psycopg.connect(f"host=127.0.0.1 port={port} user=bench dbname=freshet",
                                 autocommit=True) as conn:
                for label, (users, items) in shapes.items():
                    path = work / f"clicks_{label}.csv"
                    write_clicks(path, users, items, 40, seed=5)
                    name = "m_" + label.replace(".", "_")
                    conn.execute(f"CREATE EXTERNAL TABLE {name}_clicks STORED AS CSV LOCATION '{path}'")
                    conn.execute(f"CREATE MODEL {name} USING als WITH (rank = 32, iterations = 5, implicit = true, "
                                 f"alpha = 10) AS SELECT user_id, item_id, clicks FROM {name}_clicks")
                    known = [r for r in conn.execute("SHOW MODELS").fetchall() if r[0] == name][0][4]
                    for mode in ("simple", "prepared", "param"):
                        runs = []
                        error = None
                        for repeat in range(repeats):
                            try:
                                latencies = measure(conn, name, users, mode, calls, random.Random(repeat))
                            except psycopg.Error as e:
                                error = str(e).strip().splitlines()[0]
                                break
                            runs.append((percentile(latencies, 0.99), percentile(latencies, 0.5), len(latencies)))
                        result = {"system": "freshet", "measure": "recommend_latency_ms_over_pgwire",
                                  "binary": os.environ.get("FRESHET_BIN", "target/release/freshet"),
                                  "items": known, "rank": 32, "k": 10, "mode": mode}
                        if error:
                            result["error"] = error
                        else:
                            best = min(runs)
                            result.update({"calls": best[2], "repeats": len(runs),
                                           "p50": round(best[1], 3), "p99": round(best[0], 3),
                                           "p50_spread": [round(min(r[1] for r in runs), 3),
                                                          round(max(r[1] for r in runs), 3)],
                                           "p99_spread": [round(min(r[0] for r in runs), 3),
                                                          round(max(r[0] for r in runs), 3)]})
                        print(json.dumps(result), flush=True)
        finally:
            process.terminate()
            process.wait()
        load = os.getloadavg()
        print(json.dumps({"loadavg_1_5_15": [round(v, 2) for v in load]}), flush=True)


if __name__ == "__main__":
    main()
