"""TLS with each client: psycopg (libpq), asyncpg, pgJDBC, pyarrow.flight, ADBC Flight SQL and an
https client, against a server using a CA and certificate made by `freshet gen-cert` at test
time; and clear text refused by each when `[tls] require = true`."""

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import asyncpg
import psycopg
import pyarrow.flight as flight
import pytest

from conftest import BINARY

JDBC_JAR = Path("/usr/share/java/postgresql.jar")
JDBC_SOURCE = Path(__file__).resolve().parents[1] / "jdbc" / "TlsCheck.java"
USER = "tls_user"


@pytest.fixture
def certs(work_dir: Path) -> Path:
    """ca.crt, server.crt and server.key in work_dir/certs."""
    subprocess.run([str(BINARY), "gen-cert", "--dir", str(work_dir / "certs")], check=True,
                   stdout=subprocess.DEVNULL)
    return work_dir / "certs"


def tls_config(require: bool) -> str:
    return ('[tls]\ncert_file = "certs/server.crt"\nkey_file = "certs/server.key"\n'
            f"require = {'true' if require else 'false'}\n")


@pytest.fixture
def optional_tls(start_server, certs):
    return start_server(config=tls_config(False))


@pytest.fixture
def required_tls(start_server, certs):
    return start_server(config=tls_config(True))


def host_port(server, name):
    host, port = server.addresses[name].rsplit(":", 1)
    return host, int(port)


def flight_tls_uri(server) -> str:
    host, port = host_port(server, "flight")
    return f"grpc+tls://{host}:{port}"


def test_psycopg_verify_full_require_and_disable(optional_tls, certs):
    ca = certs / "ca.crt"
    for host in ("127.0.0.1", "localhost"):
        dsn = optional_tls.pg_dsn(USER).replace("host=127.0.0.1", f"host={host}")
        with psycopg.connect(f"{dsn} sslmode=verify-full sslrootcert={ca}") as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("SELECT 40 + 2").fetchone() == (42,)
    with psycopg.connect(f"{optional_tls.pg_dsn(USER)} sslmode=require") as conn:
        assert conn.pgconn.ssl_in_use
    # TLS optional: clear text is still served.
    with psycopg.connect(f"{optional_tls.pg_dsn(USER)} sslmode=disable") as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psycopg_refuses_a_server_its_ca_did_not_sign(optional_tls, work_dir):
    subprocess.run([str(BINARY), "gen-cert", "--dir", str(work_dir / "other")], check=True,
                   stdout=subprocess.DEVNULL)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(f"{optional_tls.pg_dsn(USER)} sslmode=verify-full sslrootcert={work_dir / 'other' / 'ca.crt'}")


def test_asyncpg_verifies_with_the_ca_and_is_refused_in_clear_text(required_tls, certs):
    host, port = host_port(required_tls, "pgwire")

    async def run():
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        conn = await asyncpg.connect(host=host, port=port, user=USER, database="freshet", ssl=context)
        try:
            assert await conn.fetchval("SELECT 40 + 2") == 42
        finally:
            await conn.close()
        with pytest.raises(asyncpg.exceptions.InvalidAuthorizationSpecificationError) as refused:
            await asyncpg.connect(host=host, port=port, user=USER, database="freshet", ssl=False)
        assert refused.value.sqlstate == "28000"
        assert "requires TLS" in str(refused.value)

    asyncio.run(run())


def test_psycopg_clear_text_refused_when_tls_is_required(required_tls, certs):
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(f"{required_tls.pg_dsn(USER)} sslmode=disable")
    # libpq does not expose the SQLSTATE of a start-up error; asyncpg, pgJDBC and
    # tokio-postgres (server/tests/tls.rs) check the 28000.
    assert "FATAL:  connection without TLS refused" in str(refused.value)
    with psycopg.connect(f"{required_tls.pg_dsn(USER)} sslmode=verify-full sslrootcert={certs / 'ca.crt'}") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def jdbc(server, params: str, tmp_path: Path) -> list[str]:
    if not JDBC_JAR.exists() or shutil.which("javac") is None:
        if os.environ.get("FRESHET_REQUIRE_JDBC") == "1":
            pytest.fail("FRESHET_REQUIRE_JDBC=1 but javac or /usr/share/java/postgresql.jar is missing")
        pytest.skip("needs javac and libpostgresql-jdbc-java (.ci/run installs them)")
    classes = tmp_path / "jdbc-classes"
    if not (classes / "TlsCheck.class").exists():
        subprocess.run(["javac", "-d", str(classes), "-cp", str(JDBC_JAR), str(JDBC_SOURCE)], check=True)
    host, port = host_port(server, "pgwire")
    output = subprocess.run(
        ["java", "-cp", f"{JDBC_JAR}:{classes}", "TlsCheck",
         f"jdbc:postgresql://{host}:{port}/freshet?{params}", USER],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return output.stdout.strip().split("\t")


def test_jdbc_verify_full_and_clear_text_refused(required_tls, certs, tmp_path):
    ca = certs / "ca.crt"
    assert jdbc(required_tls, f"sslmode=verify-full&sslrootcert={ca}", tmp_path) == ["ok", "42"]
    assert jdbc(required_tls, "sslmode=require", tmp_path) == ["ok", "42"]
    kind, sqlstate, message = jdbc(required_tls, "sslmode=disable", tmp_path)
    assert (kind, sqlstate) == ("error", "28000"), message
    assert "requires TLS" in message


def test_jdbc_verify_full_refuses_another_ca(optional_tls, work_dir, tmp_path):
    subprocess.run([str(BINARY), "gen-cert", "--dir", str(work_dir / "other")], check=True,
                   stdout=subprocess.DEVNULL)
    kind, sqlstate, message = jdbc(optional_tls, f"sslmode=verify-full&sslrootcert={work_dir / 'other' / 'ca.crt'}", tmp_path)
    assert kind == "error" and sqlstate == "08006", message


def test_pyarrow_flight_over_tls_with_the_ca(required_tls, certs):
    ca = (certs / "ca.crt").read_bytes()
    client = flight.connect(flight_tls_uri(required_tls), tls_root_certs=ca)
    table = client.do_get(flight.Ticket(b"SELECT 40 + 2 AS answer")).read_all()
    assert table.column("answer").to_pylist() == [42]
    client.close()
    # Without the CA the client refuses the server's certificate.
    untrusting = flight.connect(flight_tls_uri(required_tls))
    with pytest.raises(flight.FlightUnavailableError):
        untrusting.do_get(flight.Ticket(b"SELECT 1")).read_all()
    # Clear text is refused when TLS is required: the connection is closed.
    host, port = host_port(required_tls, "flight")
    plain = flight.connect(f"grpc://{host}:{port}")
    with pytest.raises(flight.FlightUnavailableError):
        plain.do_get(flight.Ticket(b"SELECT 1")).read_all()


def test_adbc_flight_sql_over_tls_with_the_ca(optional_tls, certs):
    ca = (certs / "ca.crt").read_text()
    options = {adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value: ca}
    with flight_sql.connect(flight_tls_uri(optional_tls), db_kwargs=options, autocommit=True) as conn, \
            conn.cursor() as cur:
        cur.execute("CREATE TABLE t (a INT)")
        cur.execute("INSERT INTO t VALUES (1), (2), (3)")
        cur.execute("SELECT sum(a) AS total FROM t")
        assert cur.fetchone() == (6,)
    # TLS optional: plain grpc:// is served too.
    with flight_sql.connect(optional_tls.flight_uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT 7 AS seven")
        assert cur.fetchone() == (7,)


def test_https_health_metrics_and_ingest_with_the_ca(required_tls, certs):
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    host, port = host_port(required_tls, "http")
    base = f"https://localhost:{port}"
    with urllib.request.urlopen(f"{base}/health", context=context) as response:
        assert json.load(response)["status"] == "ok"
    with urllib.request.urlopen(f"{base}/metrics", context=context) as response:
        assert "freshet_pg_connections_active" in response.read().decode()
    # Event ingest over https: an unknown source is a JSON 404 (the request got through TLS).
    request = urllib.request.Request(f"{base}/v1/sources/nope/events", data=b'{"a": 1}',
                                     headers={"content-type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, context=context)
    assert missing.value.code == 404
    # A client that does not trust the CA fails; clear text gets 400.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{base}/health", context=ssl.create_default_context())
    with pytest.raises(urllib.error.HTTPError) as plain:
        urllib.request.urlopen(f"http://{host}:{port}/health")
    assert plain.value.code == 400
    assert json.load(plain.value)["code"] == "tls_required"
