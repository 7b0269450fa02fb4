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
