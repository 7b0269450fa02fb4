"""ALS in Freshet versus Spark MLlib ALS and `implicit`, on the same synthetic data in one run.

Usage (from the repo root, in the venv; build with `cargo build --release -p freshet` first):
    .venv/bin/python benches/als.py [--peers PYTHON]

1. Generates MovieLens-format data (`user<TAB>item<TAB>rating<TAB>timestamp`, u1.base/u1.test
   split 90/10) with a known rank-8 structure plus noise, at 100k ratings (943 users × 1682
   items, MovieLens-100k's shape) and 1M ratings (6040 × 3706, MovieLens-1M's shape). No
   MovieLens data is used: its licence forbids redistribution.
2. Freshet: CREATE EXTERNAL TABLE over u1.base (tab-separated), CREATE MODEL … USING als for
   rank 10 and 64 (10 iterations, regularization 0.1), training seconds from SHOW MODELS,
   held-out RMSE computed in SQL with predict_rating().
3. recommend() latency p50/p99 over pgwire with a 100k-item implicit model.
3b. Implicit feedback with the `implicit` peer's protocol (ratings >= 4 as positives): training
   seconds, precision@10 on held-out positives, recommend latency over pgwire.
4. With --peers PYTHON (a Python with pyspark and implicit), runs ../shared/peers/spark_als.py
   (rank 10 and 64) and implicit_als.py (10 and 64 factors) on the same files.
Prints one JSON object per measurement.
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import start_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "peers"


def generate(directory: Path, users: int, items: int, ratings: int, seed: int = 1):
    """Integer ratings 1..5 from a rank-8 truth plus noise; users and items are 1-based.

    Like MovieLens, who rates what is skewed: item popularity follows a Zipf-like law and user
    activity a log-normal one, and a user is likelier to rate items they like (an item is
    kept with a probability that grows with the true affinity). So which items a user rated
    carries signal, as in real data, and implicit-feedback precision@10 means something.
    """
    rng = random.Random(seed)
    rank = 8
    uf = [[rng.gauss(0, 0.5) for _ in range(rank)] for _ in range(users + 1)]
    itf = [[rng.gauss(0, 0.5) for _ in range(rank)] for _ in range(items + 1)]
    item_ids = list(range(1, items + 1))
    rng.shuffle(item_ids)
    item_weights = [1.0 / (n + 10) ** 0.9 for n in range(items)]
    user_ids = list(range(1, users + 1))
    user_weights = [rng.lognormvariate(0, 1.0) for _ in range(users)]
    seen = set()
    rows = []
    while len(rows) < ratings:
        us = rng.choices(user_ids, user_weights, k=4096)
        its = rng.choices(item_ids, item_weights, k=4096)
        for u, i in zip(us, its):
            if len(rows) >= ratings:
                break
            if (u, i) in seen:
                continue
            affinity = sum(a * b for a, b in zip(uf[u], itf[i]))
            if rng.random() > 0.35 + 0.5 * max(0.0, min(1.0, 0.5 + affinity)):
                continue
            seen.add((u, i))
            r = 3.0 + affinity + rng.gauss(0, 0.3)
            rows.append((u, i, min(5, max(1, round(r)))))  # integer stars, as MovieLens
    rows.sort(key=lambda row: rng.random())
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "u1.base", "w") as base, open(directory / "u1.test", "w") as test:
        for n, (u, i, r) in enumerate(rows):
            (test if n % 10 == 0 else base).write(f"{u}\t{i}\t{r}\t0\n")


def freshet_training(conn, directory: Path, label: str, rank: int):
    conn.execute(f"CREATE EXTERNAL TABLE IF NOT EXISTS base_{label} (user_id BIGINT, item_id BIGINT, rating DOUBLE, ts BIGINT) "
                 f"STORED AS CSV LOCATION '{directory}/u1.base' OPTIONS ('format.delimiter' '\t', 'format.has_header' 'false')")
    conn.execute(f"CREATE EXTERNAL TABLE IF NOT EXISTS test_{label} (user_id BIGINT, item_id BIGINT, rating DOUBLE, ts BIGINT) "
                 f"STORED AS CSV LOCATION '{directory}/u1.test' OPTIONS ('format.delimiter' '\t', 'format.has_header' 'false')")
    name = f"m_{label}_{rank}"
    started = time.time()
    conn.execute(f"CREATE MODEL {name} USING als WITH (rank = {rank}, iterations = 10, regularization = 0.1, seed = 42) "
                 f"AS SELECT user_id, item_id, rating FROM base_{label}")
    wall = time.time() - started
    row = [r for r in conn.execute("SHOW MODELS").fetchall() if r[0] == name][0]
    rmse = conn.execute(f"SELECT sqrt(avg(power(predict_rating('{name}', user_id, item_id) - rating, 2))) "
                        f"FROM test_{label} WHERE predict_rating('{name}', user_id, item_id) IS NOT NULL").fetchone()[0]
    print(json.dumps({"system": "freshet-als", "data": label, "ratings": row[5], "rank": rank, "iterations": 10,
                      "train_s": round(row[7], 3), "create_model_wall_s": round(wall, 3),
                      "train_rmse": round(row[8], 4), "test_rmse": round(rmse, 4)}), flush=True)
    conn.execute(f"DROP MODEL {name}")


def freshet_implicit(conn, directory: Path, label: str, rank: int, iterations: int):
    """The `implicit` peer's protocol: ratings >= 4 are positives (value 1), regularization 0.01,
    precision@10 on the held-out positives as implicit's ranking_metrics_at_k computes it
    (hits over min(10, held-out positives), summed over users), training items excluded."""
    name = f"i_{label}_{rank}"
    started = time.time()
    conn.execute(f"CREATE MODEL {name} USING als WITH (rank = {rank}, iterations = {iterations}, regularization = 0.01, "
                 f"implicit = true, alpha = 1.0, seed = 42) "
                 f"AS SELECT user_id, item_id, 1 FROM base_{label} WHERE rating >= 4")
    wall = time.time() - started
    row = [r for r in conn.execute("SHOW MODELS").fetchall() if r[0] == name][0]
    held_out = {}
    for user, item in conn.execute(f"SELECT user_id, item_id FROM test_{label} WHERE rating >= 4").fetchall():
        held_out.setdefault(user, set()).add(item)
    recs = {}
    for user, item, _score in conn.execute(f"SELECT user_id, item_id, score FROM recommend_all('{name}', 10)").fetchall():
        recs.setdefault(user, []).append(item)
    hits = sum(len(set(recs.get(u, [])) & liked) for u, liked in held_out.items())
    possible = sum(min(10, len(liked)) for liked in held_out.values())
    latencies = []
    for u in sorted(held_out)[:500]:
        begun = time.perf_counter()
        conn.execute(f"SELECT * FROM recommend('{name}', {u}, 10)").fetchall()
        latencies.append((time.perf_counter() - begun) * 1000)
    latencies.sort()
    print(json.dumps({"system": "freshet-als-implicit", "data": label, "ratings": row[5], "rank": rank,
                      "iterations": iterations, "train_s": round(row[7], 3), "create_model_wall_s": round(wall, 3),
                      "precision@10": round(hits / possible, 4),
                      "recommend_p50_ms_pgwire": round(latencies[len(latencies) // 2], 3),
                      "recommend_p99_ms_pgwire": round(latencies[int(len(latencies) * 0.99)], 3)}), flush=True)
    conn.execute(f"DROP MODEL {name}")


def recommend_latency(conn, directory: Path):
    """A 100k-item implicit model; latency of `recommend` for 500 users over pgwire."""
    rng = random.Random(5)
    users, items = 5000, 100_000
    path = directory / "wide.csv"
    with open(path, "w") as f:
        f.write("user_id,item_id,clicks\n")
        for u in range(users):
            for _ in range(40):
                f.write(f"{u},{rng.randrange(items)},{rng.randint(1, 3)}\n")
        # Every item appears at least once so the model knows 100k items.
        for i in range(items):
            f.write(f"{rng.randrange(users)},{i},1\n")
    conn.execute(f"CREATE EXTERNAL TABLE wide STORED AS CSV LOCATION '{path}'")
    conn.execute("CREATE MODEL wide USING als WITH (rank = 32, iterations = 5, implicit = true, alpha = 10) "
                 "AS SELECT user_id, item_id, clicks FROM wide")
    known_items = [r for r in conn.execute("SHOW MODELS").fetchall() if r[0] == "wide"][0][4]
    latencies = []
    for u in rng.sample(range(users), 500):
        started = time.perf_counter()
        conn.execute(f"SELECT * FROM recommend('wide', {u}, 10)").fetchall()
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    print(json.dumps({"system": "freshet-als", "measure": "recommend_latency_ms_over_pgwire", "items": known_items,
                      "rank": 32, "p50": round(latencies[250], 3), "p99": round(latencies[494], 3)}), flush=True)


def main():
    peers_python = None
    if "--peers" in sys.argv:
        peers_python = sys.argv[sys.argv.index("--peers") + 1]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = {"100k": (943, 1682, 100_000), "1m": (6040, 3706, 1_000_000)}
        for label, (u, i, n) in sets.items():
            generate(work / label, u, i, n)
        process, port = start_server(work)
        try:
            with psycopg.connect(f"host=127.0.0.1 port={port} user=bench dbname=freshet", autocommit=True) as conn:
                for label in sets:
                    for rank in (10, 64):
                        freshet_training(conn, work / label, label, rank)
                    for rank, iterations in ((10, 10), (64, 15)):
                        freshet_implicit(conn, work / label, label, rank, iterations)
                recommend_latency(conn, work)
        finally:
            process.terminate()
            process.wait()
        if peers_python:
            for label in sets:
                for script, args in (("spark_als.py", ["10", "10", "0.1"]), ("spark_als.py", ["64", "10", "0.1"]),
                                       ("implicit_als.py", ["10", "10"]), ("implicit_als.py", ["64", "15"])):
                    result = subprocess.run([peers_python, str(PEERS / script), str(work / label), *args],
                                            capture_output=True, text=True)
                    line = (result.stdout.strip().splitlines() or [result.stderr.strip()[-300:]])[-1]
                    print(json.dumps({"peer": script, "data": label, "output": line}), flush=True)


if __name__ == "__main__":
    main()
