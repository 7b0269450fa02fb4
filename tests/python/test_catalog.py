"""The catalog as SQLAlchemy's inspector (the way Superset lists and describes tables) and
plain pg_catalog / information_schema queries see it, against a real server.

Both SQLAlchemy PostgreSQL dialects are exercised: postgresql+psycopg2 and postgresql+psycopg.
"""

import psycopg
import pytest
import sqlalchemy as sa

SETUP = [
    "CREATE EXTERNAL TABLE users STORED AS CSV LOCATION 'data/users.csv'",
    "CREATE TABLE items (item_id BIGINT, name VARCHAR, price DOUBLE, amount DECIMAL(10, 2))",
    "INSERT INTO items VALUES (1, 'a', 1.5, 2.25)",
    "CREATE SOURCE clicks (user_id BIGINT, item_id BIGINT, ts TIMESTAMP) WITH (connector = 'datagen', "
    "events = 500, seed = 1, 'fields.user_id.min' = 1, 'fields.user_id.max' = 20, "
    "'fields.item_id.min' = 1, 'fields.item_id.max' = 30)",
    "CREATE MATERIALIZED VIEW item_clicks AS SELECT item_id, count(*) AS clicks FROM clicks GROUP BY item_id",
    "CREATE VIEW cheap AS SELECT * FROM items WHERE price < 2",
    "CREATE MODEL recs USING als WITH (rank = 4, iterations = 3, implicit = true) AS SELECT user_id, item_id FROM clicks",
]


@pytest.fixture
def catalog_server(server):
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        for statement in SETUP:
            conn.execute(statement)
    return server


def engine_for(server, driver):
    host, port = server._host_port("pgwire")
    return sa.create_engine(f"postgresql+{driver}://pytest@{host}:{port}/freshet")


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_inspector_lists_what_was_created(catalog_server, driver):
    engine = engine_for(catalog_server, driver)
    # connect() runs the dialect's start-up queries: version(), current_schema(),
    # show standard_conforming_strings, and for psycopg a pg_type lookup by to_regtype.
    with engine.connect() as conn:
        assert conn.execute(sa.text("select current_schema()")).scalar() == "public"
    assert engine.dialect.server_version_info == (16, 6)

    inspector = sa.inspect(engine)
    assert set(inspector.get_schema_names()) == {"information_schema", "models", "public"}
    assert sorted(inspector.get_table_names()) == ["clicks", "items", "users"]
    # Materialized views are listed as views (relkind 'v'), next to plain views.
    assert sorted(inspector.get_view_names()) == ["cheap", "item_clicks"]
    assert inspector.get_materialized_view_names() == []
    # A model is a view in schema models.
    assert inspector.get_view_names(schema="models") == ["recs"]
    assert inspector.get_table_names(schema="models") == []

    assert inspector.has_table("items")
    assert inspector.has_table("clicks")
    assert not inspector.has_table("nope")
    assert inspector.get_pk_constraint("items") == {"name": None, "constrained_columns": []}
    assert inspector.get_foreign_keys("items") == []
    assert inspector.get_indexes("items") == []
    assert inspector.get_unique_constraints("items") == []
    assert inspector.get_check_constraints("items") == []
    assert inspector.get_table_comment("items") == {"text": None}


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_inspector_columns(catalog_server, driver):
    inspector = sa.inspect(engine_for(catalog_server, driver))
    columns = inspector.get_columns("items")
    assert {c["name"]: str(c["type"]) for c in columns} == {
        "item_id": "BIGINT",
        "name": "TEXT",
        "price": "DOUBLE PRECISION",
        "amount": "NUMERIC(10, 2)",
    }
    # No defaults, identities or collations: the CASE branches with correlated subqueries
    # SQLAlchemy sends for them come back NULL.
    assert all(c["default"] is None and "identity" not in c for c in columns)
    assert all(c["nullable"] for c in columns)
    clicks = {c["name"]: str(c["type"]) for c in inspector.get_columns("item_clicks")}
    assert clicks == {"item_id": "BIGINT", "clicks": "BIGINT"}
    assert [c["name"] for c in inspector.get_columns("recs", schema="models")] == ["user_id", "item_id", "score"]


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_inspector_view_definition_is_the_query(catalog_server, driver):
    inspector = sa.inspect(engine_for(catalog_server, driver))
    # PostgreSQL's pg_get_viewdef gives the view's SELECT, not the CREATE VIEW statement.
    assert inspector.get_view_definition("cheap").strip().rstrip(";") == "SELECT * FROM items WHERE price < 2"
    assert "count(*)" in inspector.get_view_definition("item_clicks")
    assert inspector.get_view_definition("recs", schema="models") == "SELECT * FROM recommend_all('recs', 10)"


def rows(conn, sql):
    return conn.execute(sql).fetchall()


def test_pg_catalog_types_kinds_and_owner(catalog_server):
    with psycopg.connect(catalog_server.pg_dsn(), autocommit=True) as conn:
        columns = rows(
            conn,
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('public', 'models') ORDER BY c.relname, a.attnum",
        )
        by_table = {}
        for table, column, pg_type in columns:
            by_table.setdefault(table, []).append((column, pg_type))
        assert by_table["items"] == [
            ("item_id", "bigint"),
            ("name", "text"),
            ("price", "double precision"),
            ("amount", "numeric(10,2)"),
        ]
        assert by_table["clicks"] == [
            ("user_id", "bigint"),
            ("item_id", "bigint"),
            ("ts", "timestamp without time zone"),
        ]
        assert by_table["item_clicks"] == [("item_id", "bigint"), ("clicks", "bigint")]
        assert by_table["recs"] == [("user_id", "bigint"), ("item_id", "bigint"), ("score", "real")]

        kinds = dict(
            rows(
                conn,
                "SELECT c.relname, c.relkind FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN ('public', 'models')",
            )
        )
        assert kinds == {
            "users": "r", "items": "r", "clicks": "r",
            "item_clicks": "v", "cheap": "v", "recs": "v",
        }
        # Every object has one owner, a role that exists.
        owners = rows(
            conn,
            "SELECT DISTINCT pg_get_userbyid(c.relowner), r.rolname FROM pg_catalog.pg_class c "
            "LEFT JOIN pg_catalog.pg_roles r ON r.oid = c.relowner",
        )
        assert owners == [("freshet", "freshet")]

        views = dict(rows(conn, "SELECT viewname, definition FROM pg_catalog.pg_views WHERE schemaname = 'public'"))
        assert set(views) == {"cheap", "item_clicks"}
        assert "count(*)" in views["item_clicks"]
        assert rows(conn, "SELECT definition FROM pg_catalog.pg_views WHERE schemaname = 'models'") == [
            ("SELECT * FROM recommend_all('recs', 10)",)
        ]

        info = dict(
            rows(
                conn,
                "SELECT table_name, table_type FROM information_schema.tables "
                "WHERE table_schema IN ('public', 'models')",
            )
        )
        assert info == {
            "users": "BASE TABLE", "items": "BASE TABLE", "clicks": "BASE TABLE",
            "item_clicks": "VIEW", "cheap": "VIEW", "recs": "VIEW",
        }
        # The model relation holds every user's top 10 (fewer for a user who rated almost
        # every item): the rows of recommend_all('recs', 10).
        relation = rows(conn, "SELECT user_id, item_id FROM models.recs ORDER BY user_id, item_id")
        direct = rows(conn, "SELECT user_id, item_id FROM recommend_all('recs', 10) ORDER BY user_id, item_id")
        assert relation == direct and len(relation) > 10
        per_user = rows(conn, "SELECT max(n) FROM (SELECT user_id, count(*) AS n FROM models.recs GROUP BY user_id)")
        assert per_user == [(10,)]


def test_created_and_dropped_objects_appear_and_disappear(catalog_server):
    def relations(conn):
        return {
            r[0]
            for r in rows(
                conn,
                "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'models')",
            )
        }

    with psycopg.connect(catalog_server.pg_dsn(), autocommit=True) as conn:
        before = relations(conn)
        items_oid = rows(conn, "SELECT oid FROM pg_catalog.pg_class WHERE relname = 'items'")[0][0]
        assert rows(conn, "SELECT oid FROM pg_catalog.pg_class WHERE relname = 'items'")[0][0] == items_oid
        conn.execute("CREATE TABLE fresh (x INT)")
        assert relations(conn) == before | {"fresh"}
        conn.execute("DROP TABLE fresh")
        conn.execute("DROP MODEL recs")
        conn.execute("DROP MATERIALIZED VIEW item_clicks")
        assert relations(conn) == before - {"recs", "item_clicks"}
        # OIDs of objects that stay do not change.
        assert rows(conn, "SELECT oid FROM pg_catalog.pg_class WHERE relname = 'items'")[0][0] == items_oid


def test_catalog_functions_and_settings(catalog_server):
    with psycopg.connect(catalog_server.pg_dsn(user="alice"), autocommit=True) as conn:
        conn.execute("SET application_name = 'catalog-test'")
        conn.execute("SET extra_float_digits = 3")
        one = lambda sql: rows(conn, sql)[0][0]  # noqa: E731
        assert one("SELECT current_setting('application_name')") == "catalog-test"
        assert one("SELECT current_setting('extra_float_digits')") == "3"
        assert one("SELECT current_setting('server_version_num')") == "160006"
        assert one("SELECT current_setting('no_such_setting', true)") is None
        assert one("SELECT current_user") == "alice"
        assert one("SELECT session_user") == "alice"
        assert one("SELECT current_database()") == "freshet"
        assert one("SELECT current_schema()") == "public"
        assert one("SHOW transaction isolation level") == "read committed"
        assert one("SELECT pg_get_userbyid(10)") == "freshet"
        assert one("SELECT pg_encoding_to_char(6)") == "UTF8"
        assert one("SELECT pg_function_is_visible(1)") is True
        assert one("SELECT pg_type_is_visible(23)") is True
        assert one("SELECT has_table_privilege('items', 'SELECT')") is True
        assert one("SELECT has_column_privilege('items', 'name', 'SELECT')") is True
        assert one("SELECT has_schema_privilege('public', 'USAGE')") is True
        assert one("SELECT has_database_privilege('freshet', 'CONNECT')") is True
        assert one("SELECT obj_description(1, 'pg_class')") is None
        assert one("SELECT col_description(1, 1)") is None
        assert one("SELECT pg_get_indexdef(1)") is None
        assert one("SELECT quote_ident('a b')") == '"a b"'
        assert one("SELECT array_to_string(ARRAY[1, 2], ',')") == "1,2"
        assert one("SELECT pg_total_relation_size(1)") == 0
        assert one("SELECT format_type(1700, (10 << 16 | 2) + 4)") == "numeric(10,2)"
        assert one("SELECT to_regtype('int4')") == 23
        assert one("SELECT to_regtype('hstore')") is None
        assert one("SELECT pg_table_is_visible(oid) FROM pg_catalog.pg_class WHERE relname = 'items'") is True
        assert one("SELECT pg_table_is_visible(oid) FROM pg_catalog.pg_class WHERE relname = 'recs'") is False
        assert one("SELECT 'pg_x' LIKE 'pg/_%' ESCAPE '/'") is True
        assert one("SELECT 'pgax' LIKE 'pg/_%' ESCAPE '/'") is False
        # current_role is a keyword like current_user; a '\x…' literal cast to bytea is hex.
        assert one("SELECT current_role") == "alice"
        assert one("SELECT '\\x0102ff'::bytea") == b"\x01\x02\xff"
        # pg_backend_pid() tells connections apart and stays the same within one.
        pid = one("SELECT pg_backend_pid()")
        assert isinstance(pid, int) and pid > 0
        # … and is the process id of the connection's BackendKeyData (what cancel requests use).
        assert pid == conn.info.backend_pid
        assert one("SELECT pg_backend_pid()") == pid
        with psycopg.connect(catalog_server.pg_dsn(), autocommit=True) as other:
            assert rows(other, "SELECT pg_backend_pid()")[0][0] != pid


# Every Arrow type a query can return: (column, expression, the Arrow type DataFusion gives it,
# the PostgreSQL type PostgreSQL itself would name it). `j` is a Parquet file of JSON columns.
TS = "TIMESTAMP '2020-01-02 03:04:05.5'"
ARROW_TYPES = [
    ("n", "NULL", "Null", "text"),
    ("b", "true", "Boolean", "bool"),
    ("i8", "arrow_cast(1, 'Int8')", "Int8", "int2"),
    ("i16", "arrow_cast(1, 'Int16')", "Int16", "int2"),
    ("i32", "arrow_cast(1, 'Int32')", "Int32", "int4"),
    ("i64", "arrow_cast(1, 'Int64')", "Int64", "int8"),
    ("u8", "arrow_cast(1, 'UInt8')", "UInt8", "int2"),
    ("u16", "arrow_cast(1, 'UInt16')", "UInt16", "int4"),
    ("u32", "arrow_cast(1, 'UInt32')", "UInt32", "int8"),
    ("u64", "arrow_cast(1, 'UInt64')", "UInt64", "numeric"),
    ("f16", "arrow_cast(1.5, 'Float16')", "Float16", "float4"),
    ("f32", "arrow_cast(1.5, 'Float32')", "Float32", "float4"),
    ("f64", "arrow_cast(1.5, 'Float64')", "Float64", "float8"),
    ("d32", "arrow_cast(1.5, 'Decimal32(5, 2)')", "Decimal32(5, 2)", "numeric"),
    ("d64", "arrow_cast(1.5, 'Decimal64(15, 3)')", "Decimal64(15, 3)", "numeric"),
    ("d128", "CAST(1.5 AS DECIMAL(10, 2))", "Decimal128(10, 2)", "numeric"),
    ("d128z", "CAST(1 AS DECIMAL(38, 0))", "Decimal128(38, 0)", "numeric"),
    ("d256", "arrow_cast(1.5, 'Decimal256(60, 4)')", "Decimal256(60, 4)", "numeric"),
    ("s", "arrow_cast('a', 'Utf8')", "Utf8", "text"),
    ("ls", "arrow_cast('a', 'LargeUtf8')", "LargeUtf8", "text"),
    ("vs", "arrow_cast('a', 'Utf8View')", "Utf8View", "text"),
    ("ds", "arrow_cast('a', 'Dictionary(Int32, Utf8)')", "Dictionary(Int32, Utf8)", "text"),
    ("bin", "arrow_cast('ab', 'Binary')", "Binary", "bytea"),
    ("lbin", "arrow_cast('ab', 'LargeBinary')", "LargeBinary", "bytea"),
    ("vbin", "arrow_cast('ab', 'BinaryView')", "BinaryView", "bytea"),
    ("fbin", "arrow_cast(X'0102', 'FixedSizeBinary(2)')", "FixedSizeBinary(2)", "bytea"),
    ("d", "DATE '2020-01-02'", "Date32", "date"),
    ("d64d", "arrow_cast(DATE '2020-01-02', 'Date64')", "Date64", "date"),
    ("t32s", "arrow_cast(TIME '10:00:01', 'Time32(Second)')", "Time32(s)", "time"),
    ("t32ms", "arrow_cast(TIME '10:00:01', 'Time32(Millisecond)')", "Time32(ms)", "time"),
    ("t64us", "arrow_cast(TIME '10:00:01', 'Time64(Microsecond)')", "Time64(µs)", "time"),
    ("t64ns", "arrow_cast(TIME '10:00:01', 'Time64(Nanosecond)')", "Time64(ns)", "time"),
    ("iv", "INTERVAL '1 day 2 hours'", "Interval(MonthDayNano)", "interval"),
    ("dur", f"{TS} - TIMESTAMP '2020-01-01'", "Duration(ns)", "interval"),
    ("durs", "arrow_cast(5, 'Duration(Second)')", "Duration(s)", "interval"),
    ("st", "named_struct('a', 1, 'b', 'x')", 'Struct("a": Int64, "b": Utf8)', "record"),
]
for unit, short in [("Second", "s"), ("Millisecond", "ms"), ("Microsecond", "µs"), ("Nanosecond", "ns")]:
    ARROW_TYPES.append((f"ts{short}", f"arrow_cast({TS}, 'Timestamp({unit}, None)')", f"Timestamp({short})", "timestamp"))
    ARROW_TYPES.append(
        (f"tz{short}", f"arrow_cast({TS}, 'Timestamp({unit}, Some(\"UTC\"))')", f'Timestamp({short}, "UTC")', "timestamptz")
    )
# Arrays of each (PostgreSQL arrays are one type per element type; records too).
ARROW_TYPES += [
    (f"a_{name}", f"make_array({expr})", f"List({arrow})", f"_{pg}")
    for name, expr, arrow, pg in list(ARROW_TYPES)
    if name != "ds"  # a list of dictionaries is not something the encoder writes
]
ARROW_TYPES += [
    ("ll", "arrow_cast(make_array(1), 'LargeList(Int64)')", "LargeList(Int64)", "_int8"),
    ("fl", "arrow_cast(make_array(1), 'FixedSizeList(1, Int64)')", "FixedSizeList(1 x Int64)", "_int8"),
    ("j", "j.doc", "Utf8View", "json"),
    (
        "aj",
        "j.docs",
        'List(Utf8, field: \'element\', metadata: {"ARROW:extension:metadata": "", "ARROW:extension:name": "arrow.json"})',
        "_json",
    ),
]


def write_json_parquet(path):
    """A Parquet file whose columns carry the Arrow canonical JSON extension type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    json_type = pa.json_(pa.utf8())
    doc = pa.ExtensionArray.from_storage(json_type, pa.array(['{"a": 1}']))
    docs = pa.ListArray.from_arrays(
        pa.array([0, 1], pa.int32()), pa.ExtensionArray.from_storage(json_type, pa.array(['{"b": 2}']))
    )
    pq.write_table(pa.table({"doc": doc, "docs": docs}), path)


def test_catalog_types_are_the_types_clients_receive(server):
    """For every Arrow type a query returns, the type a client reads from pg_catalog and
    information_schema is the type RowDescription announces (OID, modifier, length), and it is
    the one PostgreSQL gives such a column (`SELECT NULL` is text, numeric carries (p, s))."""
    write_json_parquet(server.work_dir / "json.parquet")
    select = ", ".join(f"{expr} AS {name}" for name, expr, _, _ in ARROW_TYPES)
    query = f"SELECT {select} FROM j"
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        # Field metadata (the JSON extension) is kept only when the table is told to.
        conn.execute(
            "CREATE EXTERNAL TABLE j STORED AS PARQUET LOCATION 'json.parquet' "
            "OPTIONS ('format.skip_metadata' 'false')"
        )
        conn.execute(f"CREATE VIEW all_types AS {query}")

        # The cases are what they say: DataFusion gives each column the Arrow type named.
        typeofs = ", ".join(f"arrow_typeof({name})" for name, _, _, _ in ARROW_TYPES)
        arrow = conn.execute(f"SELECT {typeofs} FROM all_types").fetchone()
        assert dict(zip([c[0] for c in ARROW_TYPES], arrow)) == {c[0]: c[2] for c in ARROW_TYPES}

        # On the wire: the view and the query itself (RowDescription, text and binary).
        received = {}
        for binary in (False, True):
            for sql in ("SELECT * FROM all_types", query):
                cur = conn.cursor(binary=binary)
                cur.execute(sql)
                cur.fetchall()
                wire = {c.name: (c.type_code, c._fmod, c._fsize) for c in cur.description}
                assert received.setdefault("wire", wire) == wire, sql
        wire = received["wire"]

        attributes = {
            name: (oid, typmod, length, typname, shown)
            for name, oid, typmod, length, typname, shown in conn.execute(
                "SELECT a.attname, a.atttypid, a.atttypmod, a.attlen, t.typname, "
                "format_type(a.atttypid, a.atttypmod) "
                "FROM pg_catalog.pg_attribute a "
                "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                "LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
                "WHERE c.relname = 'all_types' ORDER BY a.attnum"
            )
        }
        columns = {
            name: (data_type, udt_name, precision, scale)
            for name, data_type, udt_name, precision, scale in conn.execute(
                "SELECT column_name, data_type, udt_name, numeric_precision, numeric_scale "
                "FROM information_schema.columns WHERE table_name = 'all_types' "
                "ORDER BY ordinal_position"
            )
        }
        assert list(attributes) == list(columns) == list(wire) == [c[0] for c in ARROW_TYPES]

        problems = []
        for name, _, arrow_type, pg_name in ARROW_TYPES:
            oid, typmod, length = wire[name]
            data_type, udt_name, precision, scale = columns[name]
            shown = attributes[name][4]
            # The catalog describes the column exactly as it is sent, with a type pg_type has,
            # named as PostgreSQL names it, the same in information_schema and format_type.
            expected = [
                ("pg_attribute (atttypid, atttypmod, attlen)", attributes[name][:3], (oid, typmod, length)),
                ("pg_type.typname", attributes[name][3], pg_name),
                ("information_schema udt_name", udt_name, pg_name),
            ]
            if pg_name.startswith("_"):
                expected.append(("array data_type and format_type", (data_type, shown[-2:]), ("ARRAY", "[]")))
            else:
                expected.append(("format_type", shown.split("(")[0], data_type))
            # What the driver makes of the wire's modifier is what the catalog says of it.
            column = next(c for c in cur.description if c.name == name)
            if pg_name == "numeric" and typmod != -1:
                expected.append(("numeric (precision, scale)", (column.precision, column.scale), (precision, scale)))
                expected.append(("format_type", shown, f"numeric({precision},{scale})"))
            problems += [
                f"{name} ({arrow_type}): {what}: {actual!r} != {wanted!r}"
                for what, actual, wanted in expected
                if actual != wanted
            ]
        assert problems == []

        assert attributes["n"][0] == 25  # not `unknown` (705): PostgreSQL sends NULL as text
        assert attributes["d128"][4] == "numeric(10,2)"
        assert attributes["a_d128"][4] == "numeric(10,2)[]"


def test_types_no_client_can_receive_fail_clearly_and_are_listed_as_text(server):
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        conn.execute("CREATE VIEW unsendable AS SELECT 1 AS id, map(['a'], [1]) AS m")
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="cannot send Map"):
            conn.execute("SELECT m FROM unsendable")
        # The relation can still be described, and its other columns read.
        assert conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a "
            "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid WHERE c.relname = 'unsendable' "
            "ORDER BY a.attnum"
        ).fetchall() == [("id", "bigint"), ("m", "text")]
        assert conn.execute("SELECT id FROM unsendable").fetchall() == [(1,)]


def test_declared_parameter_types_come_back_as_declared(server):
    """A parameter typed by the client in Parse is described (ParameterDescription) and returned
    (RowDescription) as that type: the declared-type → Arrow → PostgreSQL mapping is one."""
    declared = {
        "bool": 16, "int2": 21, "int4": 23, "int8": 20, "float4": 700, "float8": 701,
        "numeric": 1700, "text": 25, "bytea": 17, "date": 1082, "time": 1083,
        "timestamp": 1114, "timestamptz": 1184, "interval": 1186, "_int4": 1007, "_text": 1009,
    }
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        pgconn = conn.pgconn
        found = {}
        for name, oid in declared.items():
            statement = f"p_{name}".encode()
            assert pgconn.prepare(statement, b"SELECT $1 AS c", [oid]).status == psycopg.pq.ExecStatus.COMMAND_OK
            described = pgconn.describe_prepared(statement)
            assert described.status == psycopg.pq.ExecStatus.COMMAND_OK, described.error_message
            found[name] = (described.param_type(0), described.ftype(0))
        assert found == {name: (oid, oid) for name, oid in declared.items()}
