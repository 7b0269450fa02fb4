"""psycopg 3 against the pgwire frontend: the basics a Python user relies on."""

import psycopg
import pytest


def test_select_parameters_and_types(server):
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTERNAL TABLE users STORED AS CSV LOCATION 'data/users.csv'")
        rows = conn.execute(
            "SELECT user_id, name FROM users WHERE country = %s ORDER BY user_id", ("DE",)
        ).fetchall()
        assert rows == [(1, "alice"), (4, "dave")]
        # Binary results decode too.
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT count(*), max(name) FROM users")
            assert cur.fetchone() == (4, "dave")


def test_error_keeps_the_connection_usable(server):
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM missing")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_transactions_are_accepted(server):
    # psycopg opens a transaction implicitly when not in autocommit mode.
    with psycopg.connect(server.pg_dsn()) as conn:
        conn.execute("CREATE TABLE t (a INT)")
        conn.execute("INSERT INTO t VALUES (1), (2)")
        conn.commit()
        assert conn.execute("SELECT sum(a) FROM t").fetchone() == (2 + 1,)
        conn.rollback()


def test_clients_over_max_connections_get_too_many_clients(start_server):
    server = start_server(args=("--max-connections", "2"))
    held = [psycopg.connect(server.pg_dsn(), autocommit=True) for _ in range(2)]
    try:
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(server.pg_dsn(), autocommit=True)
        # libpq reports a start-up failure as text only (psycopg has no sqlstate for it);
        # the SQLSTATE 53300 itself is checked with tokio-postgres in server/tests/hostile.rs.
        assert "FATAL:  sorry, too many clients already" in str(refused.value)
        # The admitted connections are undisturbed.
        assert held[0].execute("SELECT 1").fetchone() == (1,)
    finally:
        for conn in held:
            conn.close()


def test_hostile_statements_get_errors_and_the_connection_goes_on(server):
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedParameter):
            conn.execute("SELECT $2000000000")
        with pytest.raises(psycopg.errors.StatementTooComplex):
            conn.execute("SELECT 1" + " + 1" * 100_000)
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute("SELECT 1" + " + 1" * 2_000_000)
        assert conn.execute("SELECT 2").fetchone() == (2,)
