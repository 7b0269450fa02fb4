"""Arrow Flight SQL: ADBC and plain pyarrow.flight against the same engine as pgwire."""

import datetime
import decimal

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import psycopg
import pyarrow as pa
import pyarrow.flight as flight
import pytest

AUTH = '[[auth.users]]\nname = "alice"\npassword = "s3cret"\n'
CREATE_USERS = "CREATE EXTERNAL TABLE users STORED AS CSV LOCATION 'data/users.csv'"


def connect(server, **kwargs):
    # Freshet has no transactions: autocommit avoids ADBC's "cannot disable autocommit" warning.
    return flight_sql.connect(server.flight_uri, autocommit=True, **kwargs)


def test_ddl_and_queries_through_adbc(server):
    with connect(server) as conn, conn.cursor() as cur:
        # ADBC prepares every statement: DDL goes through the prepared-statement path.
        cur.execute(CREATE_USERS)
        cur.execute("SELECT user_id, name, country FROM users ORDER BY user_id")
        table = cur.fetch_arrow_table()
        assert table.column_names == ["user_id", "name", "country"]
        assert table.schema.field("user_id").type == pa.int64()
        assert table.column("name").to_pylist() == ["alice", "bob", "carol", "dave"]
        cur.execute("SELECT count(*) AS n FROM users WHERE country = 'DE'")
        assert cur.fetchone() == (2,)


def test_parameters_are_bound_and_rebound(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(CREATE_USERS)
        query = "SELECT name FROM users WHERE country = $1 AND user_id > $2 ORDER BY user_id"
        cur.execute(query, parameters=("DE", 0))
        assert cur.fetchall() == [("alice",), ("dave",)]
        # The same prepared statement with other values.
        cur.execute(query, parameters=("DE", 1))
        assert cur.fetchall() == [("dave",)]
        # A parameter whose result type is only known once bound.
        cur.execute("SELECT $1 + 1 AS next", parameters=(41,))
        assert cur.fetch_arrow_table().column("next").to_pylist() == [42]


def test_adbc_qmark_parameters_match_psycopg(server):
    # ADBC's DB-API announces the qmark style; Flight sessions read `?` as $1, $2, … in order
    # (compatibility rule qmark-placeholders).
    assert flight_sql.paramstyle == "qmark"
    query = "SELECT user_id, name FROM users WHERE country = {} AND user_id > {} ORDER BY user_id"
    with psycopg.connect(server.pg_dsn(), autocommit=True) as pg:
        pg.execute(CREATE_USERS)
        expected = pg.execute(query.format("%s", "%s"), ("DE", 0)).fetchall()
    assert len(expected) == 2
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(query.format("?", "?"), parameters=("DE", 0))
        assert cur.fetchall() == expected
        # A question mark in a string is text, not a placeholder.
        cur.execute("SELECT '?' AS q, ? + 1 AS p", parameters=(2,))
        assert cur.fetchall() == [("?", 3)]
        # The rule is what makes it work: without it `?` is PostgreSQL's operator.
        cur.execute("SET compat_rules_disabled = 'qmark-placeholders'")
        with pytest.raises(adbc_driver_manager.Error):
            cur.execute(query.format("?", "?"), parameters=("DE", 0))
            cur.fetchall()


def test_updates_through_do_put(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (a INT, b VARCHAR)")
        # executemany: one prepared statement, one DoPut with a parameter row per execution.
        cur.executemany("INSERT INTO t VALUES ($1, $2)", [(1, "x"), (2, "y")])
        assert cur.rowcount == 2
        # A plain update statement (CommandStatementUpdate).
        statement = cur.adbc_statement
        statement.set_sql_query("INSERT INTO t VALUES (3, 'z')")
        assert statement.execute_update() == 1
        cur.execute("SELECT a, b FROM t ORDER BY a")
        assert cur.fetchall() == [(1, "x"), (2, "y"), (3, "z")]
        # A query sent as an update is refused rather than run for nothing.
        statement.set_sql_query("SELECT * FROM t")
        with pytest.raises(adbc_driver_manager.ProgrammingError, match="returns rows"):
            statement.execute_update()


def test_own_statements_and_session_settings(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(CREATE_USERS)
        cur.execute("SHOW TABLES")
        rows = cur.fetchall()
        assert [(r[0], r[1], r[2], r[4]) for r in rows] == [("public", "users", "external table", "ok")]
        # Without authentication a session lasts as long as the client's connection.
        cur.execute("SET datafusion.execution.batch_size = 3")
        cur.execute("SHOW datafusion.execution.batch_size")
        assert cur.fetchall() == [("3",)]
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("SHOW datafusion.execution.batch_size")
        assert cur.fetchall() == [("8192",)]


def test_metadata_calls(server):
    with connect(server) as conn:
        with conn.cursor() as cur:
            cur.execute(CREATE_USERS)
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "Freshet"
        assert info["vendor_version"]
        assert info["vendor_arrow_version"].startswith("59.")

        schema = conn.adbc_get_table_schema("users")
        assert schema.names == ["user_id", "name", "country"]
        assert schema.field("user_id").type == pa.int64()

        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        catalogs = {c["catalog_name"]: c for c in objects}
        assert "freshet" in catalogs
        schemas = {s["db_schema_name"]: s for s in catalogs["freshet"]["catalog_db_schemas"]}
        assert {"public", "information_schema", "pg_catalog"} <= set(schemas)
        tables = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
        assert tables["users"]["table_type"] == "BASE TABLE"
        columns = [c["column_name"] for c in tables["users"]["table_columns"]]
        assert columns == ["user_id", "name", "country"]

        filtered = conn.adbc_get_objects(depth="tables", table_name_filter="use%").read_all().to_pylist()
        names = [
            t["table_name"]
            for c in filtered
            for s in c["catalog_db_schemas"] or []
            for t in s["db_schema_tables"] or []
        ]
        assert names == ["users"]
        assert "VIEW" in conn.adbc_get_table_types()


def test_error_carries_the_message_and_the_connection_stays_usable(server):
    with connect(server) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.ProgrammingError) as error:
            cur.execute("SELECT * FROM missing")
        assert "table 'freshet.public.missing' not found" in str(error.value)
        assert "NOT_FOUND" in str(error.value)
        cur.execute("SELECT 1 AS one")
        assert cur.fetchall() == [(1,)]

    client = flight.connect(server.flight_uri)
    with pytest.raises(pa.ArrowKeyError, match="missing' not found"):
        client.do_get(flight.Ticket(b"SELECT * FROM missing")).read_all()
    with pytest.raises(pa.ArrowInvalid, match="sql parser error"):
        client.do_get(flight.Ticket(b"SELEC 1")).read_all()
    assert client.do_get(flight.Ticket(b"SELECT 1 AS one")).read_all().to_pylist() == [{"one": 1}]


def test_plain_pyarrow_flight_takes_sql_as_the_ticket(server):
    client = flight.connect(server.flight_uri)
    # A statement without rows answers with an empty stream.
    assert client.do_get(flight.Ticket(CREATE_USERS.encode())).read_all().num_rows == 0
    table = client.do_get(flight.Ticket(b"SELECT name FROM users ORDER BY user_id")).read_all()
    assert table.column("name").to_pylist() == ["alice", "bob", "carol", "dave"]


def test_results_stream_batch_by_batch(server):
    client = flight.connect(server.flight_uri)
    reader = client.do_get(flight.Ticket(b"SELECT value FROM generate_series(1, 100000)"))
    sizes = [chunk.data.num_rows for chunk in reader]
    assert sum(sizes) == 100000
    # The engine's batches are sent as they are produced, not gathered into one.
    assert len(sizes) > 1


def test_authentication(start_server):
    server = start_server(config=AUTH)
    client = flight.connect(server.flight_uri)
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.do_get(flight.Ticket(b"SELECT 1")).read_all()
    with pytest.raises(flight.FlightUnauthenticatedError, match="invalid user name or password"):
        client.authenticate_basic_token("alice", "wrong")
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("mallory", "s3cret")
    with pytest.raises(flight.FlightUnauthenticatedError):
        bad = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer 00")])
        client.do_get(flight.Ticket(b"SELECT 1"), bad).read_all()

    header = client.authenticate_basic_token("alice", "s3cret")
    assert header[0] == b"authorization" and header[1].startswith(b"Bearer ")
    assert len(header[1]) == len(b"Bearer ") + 64
    options = flight.FlightCallOptions(headers=[header])
    table = client.do_get(flight.Ticket(b"SELECT 1 AS one"), options).read_all()
    assert table.to_pylist() == [{"one": 1}]

    # ADBC: user and password exchanged for a token behind the scenes.
    with connect(server, db_kwargs={"username": "alice", "password": "s3cret"}) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT $1 * 2 AS doubled", parameters=(21,))
            assert cur.fetchall() == [(42,)]
    with pytest.raises(adbc_driver_manager.Error, match="(?i)unauthenticated"):
        with connect(server, db_kwargs={"username": "alice", "password": "wrong"}) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
    with pytest.raises(adbc_driver_manager.Error, match="(?i)unauthenticated"):
        with connect(server) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")

    # The same users as pgwire.
    with psycopg.connect(server.pg_dsn(user="alice", password="s3cret")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


COMPARED = """
    SELECT u.user_id, u.name, e.action, e.amount, CAST(e.ts AS TIMESTAMP) AS ts,
           CAST(e.ts AS DATE) AS day, CAST(e.amount AS DECIMAL(10, 2)) AS price,
           e.amount > 5 AS big, CASE WHEN e.action = 'view' THEN NULL ELSE e.event_id END AS maybe
    FROM users u JOIN events e ON u.user_id = e.user_id
    ORDER BY e.event_id
"""


def test_same_rows_over_pgwire_and_flight(server):
    with psycopg.connect(server.pg_dsn(), autocommit=True) as pg:
        pg.execute(CREATE_USERS)
        pg.execute("CREATE EXTERNAL TABLE events STORED AS JSON LOCATION 'data/events.json'")
        pg_rows = pg.execute(COMPARED).fetchall()
        with pg.cursor(binary=True) as cur:
            pg_binary_rows = cur.execute(COMPARED).fetchall()
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(COMPARED)
        flight_rows = cur.fetchall()
    plain = flight.connect(server.flight_uri).do_get(flight.Ticket(COMPARED.encode())).read_all()
    plain_rows = [tuple(row.values()) for row in plain.to_pylist()]

    assert len(pg_rows) > 0
    assert flight_rows == pg_rows
    assert flight_rows == pg_binary_rows
    assert plain_rows == pg_rows
    first = flight_rows[0]
    assert isinstance(first[4], datetime.datetime)
    assert isinstance(first[5], datetime.date)
    assert isinstance(first[6], decimal.Decimal)


OBJECTS_DDL = [
    "CREATE TABLE readings (ts TIMESTAMP, host TEXT, value DOUBLE PRECISION, n INT, day DATE, ok BOOLEAN)",
    "CREATE TABLE sites (site_id BIGINT, name TEXT)",
    "CREATE VIEW ok_readings AS SELECT host, value FROM readings WHERE ok",
]
# PostgreSQL's information_schema.columns.data_type for each Arrow type Flight reports.
PG_TYPE_OF_ARROW = {
    pa.timestamp("ns"): "timestamp without time zone",
    pa.timestamp("us"): "timestamp without time zone",
    pa.string(): "text",
    pa.large_string(): "text",
    pa.string_view(): "text",
    pa.float64(): "double precision",
    pa.int32(): "integer",
    pa.int64(): "bigint",
    pa.date32(): "date",
    pa.bool_(): "boolean",
}


def objects_over_both_protocols(server):
    """(schema, table) -> [(column, position)] from ADBC's get_objects and from pgwire's
    information_schema.columns, plus the Arrow types ADBC reports and pgwire's data_type."""
    with psycopg.connect(server.pg_dsn(), autocommit=True) as pg:
        for ddl in OBJECTS_DDL:
            pg.execute(ddl)
        rows = pg.execute(
            "SELECT table_schema, table_name, column_name, ordinal_position, data_type "
            "FROM information_schema.columns WHERE table_schema = 'public' "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
    pg_columns, pg_types = {}, {}
    for schema, table, column, position, data_type in rows:
        pg_columns.setdefault((schema, table), []).append((column, position))
        pg_types[(table, column)] = data_type
    with connect(server) as conn:
        objects = conn.adbc_get_objects(depth="all", db_schema_filter="public").read_all().to_pylist()
        adbc_columns = {}
        for catalog in objects:
            assert catalog["catalog_name"] == "freshet"
            for schema in catalog["catalog_db_schemas"]:
                for table in schema["db_schema_tables"]:
                    adbc_columns[(schema["db_schema_name"], table["table_name"])] = [
                        (c["column_name"], c["ordinal_position"]) for c in table["table_columns"]
                    ]
        arrow_types = {}
        for _, table in adbc_columns:
            for field in conn.adbc_get_table_schema(table, db_schema_filter="public"):
                arrow_types[(table, field.name)] = field.type
    return pg_columns, adbc_columns, pg_types, arrow_types


def test_adbc_get_objects_lists_the_tables_and_columns_pgwire_lists(server):
    pg_columns, adbc_columns, _, _ = objects_over_both_protocols(server)
    assert set(adbc_columns) == {("public", "readings"), ("public", "sites"), ("public", "ok_readings")}
    assert set(pg_columns) == set(adbc_columns)
    names = {key: [c for c, _ in columns] for key, columns in adbc_columns.items()}
    assert names == {key: [c for c, _ in columns] for key, columns in pg_columns.items()}
    assert names[("public", "readings")] == ["ts", "host", "value", "n", "day", "ok"]
    assert [p for _, p in adbc_columns[("public", "readings")]] == [1, 2, 3, 4, 5, 6]


def test_adbc_column_positions_match_pgwire(server):
    pg_columns, adbc_columns, _, _ = objects_over_both_protocols(server)
    assert adbc_columns == pg_columns


def test_adbc_column_types_match_pgwire_data_types(server):
    _, _, pg_types, arrow_types = objects_over_both_protocols(server)
    assert set(arrow_types) == set(pg_types)
    assert {key: PG_TYPE_OF_ARROW.get(t, str(t)) for key, t in arrow_types.items()} == pg_types
