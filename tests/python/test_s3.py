"""External tables on S3, against moto's S3-compatible server (as MinIO would be used)."""

import io
import socket

import boto3
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3():
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket="lake")
    table = pa.table({"item_id": [1, 2, 3], "price": [9.5, 20.25, 3.0]})
    for part in range(2):
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        client.put_object(Bucket="lake", Key=f"items/part-{part}.parquet", Body=buffer.getvalue())
    client.put_object(Bucket="lake", Key="raw/users.csv", Body=b"user_id,name\n1,ann\n2,ben\n")
    yield endpoint, client
    moto.stop()


OPTIONS = (
    "OPTIONS ('aws.endpoint' '{endpoint}', 'aws.access_key_id' 'testing', "
    "'aws.secret_access_key' 'testing', 'aws.region' 'us-east-1')"
)


def test_parquet_and_csv_tables_on_s3_with_options(server, s3):
    endpoint, client = s3
    options = OPTIONS.format(endpoint=endpoint)
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE EXTERNAL TABLE items STORED AS PARQUET LOCATION 's3://lake/items/' {options}")
        conn.execute(f"CREATE EXTERNAL TABLE users STORED AS CSV LOCATION 's3://lake/raw/users.csv' {options}")
        assert conn.execute("SELECT count(*), sum(price) FROM items").fetchone() == (6, 65.5)
        assert conn.execute("SELECT name FROM users ORDER BY user_id").fetchall() == [("ann",), ("ben",)]
        # COPY writes back to the bucket.
        conn.execute(
            f"COPY (SELECT item_id, sum(price) AS total FROM items GROUP BY item_id) "
            f"TO 's3://lake/out/totals.parquet' STORED AS PARQUET {options}"
        )
    body = client.get_object(Bucket="lake", Key="out/totals.parquet")["Body"].read()
    totals = pq.read_table(io.BytesIO(body)).sort_by("item_id")
    assert totals.column("total").to_pylist() == [19.0, 40.5, 6.0]


def test_s3_credentials_from_the_environment_and_restart(start_server, s3):
    endpoint, _ = s3
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1", "AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true",
    }
    server = start_server(env=env)
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTERNAL TABLE items STORED AS PARQUET LOCATION 's3://lake/items/'")
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (6,)
    server.stop()
    server = start_server(env=env)
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT max(price) FROM items").fetchone() == (20.25,)


def test_wrong_s3_option_names_the_option(server, s3):
    endpoint, _ = s3
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as error:
            conn.execute(
                f"CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://lake/items/' "
                f"OPTIONS ('aws.endpoint' '{endpoint}', 'aws.secret_key' 'x')"
            )
        assert "aws.secret_key" in str(error.value)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_parquet_sink_archives_a_source_to_s3(server, s3):
    endpoint, client = s3
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        conn.execute("CREATE SOURCE events (id BIGINT, ts TIMESTAMP) WITH (connector = 'datagen', events = 5000)")
        conn.execute(
            "CREATE SINK archive FROM events WITH (connector = 'parquet', path = 's3://lake/archive/', "
            f"rollover_interval = '300ms', 'aws.endpoint' = '{endpoint}', 'aws.access_key_id' = 'testing', "
            "'aws.secret_access_key' = 'testing', 'aws.region' = 'us-east-1')"
        )
        import time
        deadline = time.time() + 30
        rows = 0
        while time.time() < deadline and rows < 5000:
            keys = [o["Key"] for o in client.list_objects_v2(Bucket="lake", Prefix="archive/").get("Contents", [])]
            parts = [k for k in keys if k.endswith(".parquet")]
            rows = sum(pq.read_table(io.BytesIO(client.get_object(Bucket="lake", Key=k)["Body"].read())).num_rows
                       for k in parts)
            time.sleep(0.3)
        assert rows == 5000
        conn.execute(f"CREATE EXTERNAL TABLE archived STORED AS PARQUET LOCATION 's3://lake/archive/' "
                     f"{OPTIONS.format(endpoint=endpoint)}")
        # The same rows as the source (ids are random, so compare their sum too).
        expected = conn.execute("SELECT count(*), sum(id) FROM events").fetchone()
        assert conn.execute("SELECT count(*), sum(id) FROM archived").fetchone() == expected
        state = conn.execute("SHOW SINKS").fetchall()[0]
        assert state[0] == "public.archive" and state[3] == "running", state


def archived(client, bucket, prefix):
    """(rows, sum of id) of the Parquet files a sink published under `prefix`."""
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    tables = [pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=k)["Body"].read()))
              for k in keys if k.endswith(".parquet")]
    return sum(t.num_rows for t in tables), sum(pa.compute.sum(t["id"]).as_py() or 0 for t in tables)


def test_sink_whose_destination_is_down_at_start_up_retries_and_loses_nothing(start_server):
    import time
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="retry")
    options = (f"'aws.endpoint' = '{endpoint}', 'aws.access_key_id' = 'testing', "
               "'aws.secret_access_key' = 'testing', 'aws.region' = 'us-east-1'")
    server = start_server()
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        conn.execute("CREATE SOURCE events (id BIGINT, ts TIMESTAMP) WITH (connector = 'datagen', events = 4000, rate = 500)")
        conn.execute("CREATE SINK archive FROM events WITH (connector = 'parquet', path = 's3://retry/archive/', "
                     f"rollover_interval = '300ms', {options})")
        conn.execute("CREATE SINK doomed FROM events WITH (connector = 'parquet', path = 's3://retry/doomed/', "
                     f"rollover_interval = '300ms', {options})")
        time.sleep(2)
    server.stop()  # a clean stop commits what the sinks wrote
    before = archived(client, "retry", "archive/")
    assert 0 < before[0] < 4000, before
    moto.stop()

    server = start_server()
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        sinks = {row[0]: row for row in conn.execute("SHOW SINKS").fetchall()}
        assert sinks["public.archive"][3] == "retrying", sinks
        assert sinks["public.archive"][5], "the error is shown"
        # A sink that is still retrying can be dropped.
        conn.execute("DROP SINK doomed")
        assert [row[0] for row in conn.execute("SHOW SINKS").fetchall()] == ["public.archive"]

        # The destination comes back (moto keeps its objects in this process): the sink starts
        # from its checkpoint and the archive ends up with every event exactly once.
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        moto.start()
        deadline = time.time() + 90
        while time.time() < deadline:
            state = conn.execute("SHOW SINKS").fetchall()[0][3]
            after = archived(client, "retry", "archive/")
            if state == "running" and after[0] >= 4000:
                break
            time.sleep(0.5)
        assert state == "running"
        expected = conn.execute("SELECT count(*), sum(id) FROM events").fetchone()
        assert expected[0] == 4000
        assert after == tuple(expected)
    moto.stop()
