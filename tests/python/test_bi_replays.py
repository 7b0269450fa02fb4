"""Replays of the catalog queries BI tools send: Grafana, Metabase and DBeaver.

Each query under replays/<tool>/ is copied from the tool's source code (the file's header comment
names where); the header is stripped and the rest is sent exactly as the tool sends it. Queries the
tools run through JDBC prepared statements (Metabase, DBeaver) or pgx (Grafana) go through the
extended protocol with the same parameters; every query also runs through the simple protocol
(psycopg's client-side binding), which is how psql-like tools send them.

The assertions check what the tool would show: the table picker lists the tables this test
created, the column picker their columns and types, a Grafana time series has the bucket counts
computed here independently of the server.
"""

import datetime
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from conftest import FreshetServer

REPLAYS = Path(__file__).parent / "replays"
USER = "pytest"

# Rows of the `metrics` table: one every 40 seconds for 50 minutes, hosts in turn.
START = datetime.datetime(2024, 3, 1, 12, 0, 0)
ROWS = [
    (START + datetime.timedelta(seconds=40 * i), ["a", "b", "c"][i % 3], i * 0.5, i % 7)
    for i in range(75)
]
TABLES = ["hosts", "metrics"]
VIEWS = ["busy_hosts"]

# PostgreSQL's names for the columns of `metrics`, as information_schema.columns.data_type and
# pg_type.typname show them.
METRICS_COLUMNS = [
    ("ts", "timestamp without time zone", "timestamp", 1114),
    ("host", "text", "text", 25),
    ("value", "double precision", "float8", 701),
    ("n", "integer", "int4", 23),
]

CATALOG_OWNER = "the pg_catalog / information_schema helper"


def replay(path: str) -> str:
    """The query of replays/<path>, without its header comment."""
    lines = (REPLAYS / path).read_text().splitlines()
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return "\n".join(lines)


JDBC_PIECES = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|\?|%)""")


def jdbc_to_psycopg(sql: str) -> str:
    """JDBC's `?` placeholders as psycopg's `%s`, a literal % doubled; like the JDBC driver, a `?`
    inside a string or a quoted identifier is not a placeholder."""

    def piece(match: re.Match) -> str:
        text = match.group(0)
        if text == "?":
            return "%s"
        return text.replace("%", "%%")

    return JDBC_PIECES.sub(piece, sql)


@pytest.fixture(scope="module")
def bi_server(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("bi")
    server = FreshetServer(work_dir)
    try:
        with psycopg.connect(server.pg_dsn(USER), autocommit=True) as conn:
            conn.execute("CREATE TABLE metrics (ts TIMESTAMP, host TEXT, value DOUBLE PRECISION, n INT)")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO metrics VALUES (%s, %s, %s, %s)", ROWS)
            conn.execute("CREATE TABLE hosts (host VARCHAR, region VARCHAR)")
            conn.execute("INSERT INTO hosts VALUES ('a', 'eu'), ('b', 'us'), ('c', 'eu')")
            conn.execute("CREATE VIEW busy_hosts AS SELECT host FROM metrics GROUP BY host HAVING count(*) > 10")
        yield server
    finally:
        server.stop()


@pytest.fixture
def conn(bi_server):
    with psycopg.connect(bi_server.pg_dsn(USER), autocommit=True) as conn:
        yield conn


def run(conn, sql: str, params=(), protocol: str = "extended"):
    """Rows of one replayed query. `extended`: Parse/Bind/Execute with the parameters, as JDBC
    and pgx send; `simple`: parameters inlined by the client, one Query message."""
    if protocol == "extended":
        with conn.cursor() as cur:
            cur.execute(jdbc_to_psycopg(sql), params, prepare=True)
            return cur.fetchall(), [d.name for d in cur.description]
    with psycopg.ClientCursor(conn) as cur:
        cur.execute(jdbc_to_psycopg(sql) if params else sql, params or None)
        return cur.fetchall(), [d.name for d in cur.description]


PROTOCOLS = ["extended", "simple"]


# ---------------------------------------------------------------------------------------------
# Grafana


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_grafana_version_check(conn, protocol):
    rows, names = run(conn, replay("grafana/version.sql"), protocol=protocol)
    assert names == ["version"]
    # Grafana offers TimescaleDB from 906 and names the version major*100 + minor.
    version_num = int(conn.execute("SHOW server_version_num").fetchone()[0])
    assert rows == [(version_num // 100,)]
    assert rows[0][0] >= 906


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_grafana_timescaledb_check_finds_none(conn, protocol):
    assert run(conn, replay("grafana/timescaledb_version.sql"), protocol=protocol)[0] == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_grafana_schema_picker(conn, protocol):
    rows, names = run(conn, replay("grafana/schemas.sql"), protocol=protocol)
    schemas = [r[0] for r in rows]
    assert names == ["name"]
    assert "public" in schemas
    assert schemas == sorted(schemas)
    assert not {"information_schema", "pg_catalog"} & set(schemas)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_grafana_table_picker_lists_tables_on_the_search_path_unqualified(conn, protocol):
    rows, names = run(conn, replay("grafana/tables.sql"), protocol=protocol)
    assert names == ["table"]
    # Tables of schemas on the search path come first, unqualified, then the others as
    # schema.table; nothing else lives in this server.
    assert [r[0] for r in rows] == sorted(TABLES + VIEWS)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_grafana_table_picker_follows_set_search_path(conn, protocol):
    conn.execute("SET search_path = pg_catalog")
    try:
        rows, _ = run(conn, replay("grafana/tables.sql"), protocol=protocol)
    finally:
        conn.execute("SET search_path = public")
    # With public off the search path, its tables are listed qualified.
    assert [r[0] for r in rows] == sorted(f"public.{t}" for t in TABLES + VIEWS)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_grafana_table_picker_in_schema(conn, protocol):
    rows, _ = run(conn, replay("grafana/tables_in_schema.sql"), protocol=protocol)
    assert [r[0] for r in rows] == sorted(TABLES + VIEWS)


@pytest.mark.parametrize("path", ["grafana/columns.sql", "grafana/columns_qualified.sql"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_grafana_column_picker_lists_the_columns(conn, path, protocol):
    rows, names = run(conn, replay(path), protocol=protocol)
    assert names == ["column", "type"]
    assert sorted(r[0] for r in rows) == sorted(c[0] for c in METRICS_COLUMNS)


def test_grafana_column_picker_shows_postgresql_types(conn):
    rows, _ = run(conn, replay("grafana/columns.sql"))
    assert sorted(rows) == sorted((c[0], c[1]) for c in METRICS_COLUMNS)


GRAFANA_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")


def grafana_interval_seconds(text: str) -> int:
    match = re.fullmatch(r"(\d+)([smhd])", text.strip("'"))
    assert match, text
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def expand_grafana_macros(sql: str, time_from: datetime.datetime, time_to: datetime.datetime) -> str:
    """Grafana's PostgreSQL macro expansion (without TimescaleDB), written after macros.go:
    `$__timeGroup(col, 'iv')` becomes `floor(extract(epoch from col)/S)*S` and gets ` AS "time"`
    when a comma follows it (or is spelled `$__timeGroupAlias`); times are RFC 3339 in UTC."""

    def rfc3339(t: datetime.datetime) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    def expand(match: re.Match) -> str:
        name, args = match.group(1), [a.strip() for a in match.group(2).split(",")]
        if name == "__timeGroup" and sql[match.end():match.end() + 1] == ",":
            name = "__timeGroupAlias"
        if name in ("__timeGroup", "__timeGroupAlias"):
            seconds = grafana_interval_seconds(args[1])
            group = f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{rfc3339(time_from)}' AND '{rfc3339(time_to)}'"
        if name == "__timeFrom":
            return f"'{rfc3339(time_from)}'"
        if name == "__timeTo":
            return f"'{rfc3339(time_to)}'"
        raise AssertionError(f"macro {name} not expanded by this test")

    return GRAFANA_MACRO.sub(expand, sql)


def test_grafana_macro_expansion_matches_grafanas_own_examples():
    # The expansions macros_test.go expects for these inputs.
    t0 = datetime.datetime(2018, 4, 12, 18, 0, 0)
    assert expand_grafana_macros("GROUP BY $__timeGroup(time_column,'5m')", t0, t0) == \
        "GROUP BY floor(extract(epoch from time_column)/300)*300"
    assert expand_grafana_macros("SELECT $__timeGroup(time_column,'5m'), value", t0, t0) == \
        'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value'
    assert expand_grafana_macros("SELECT $__timeGroup(time_column,'5m') as time, value", t0, t0) == \
        "SELECT floor(extract(epoch from time_column)/300)*300 as time, value"
    assert expand_grafana_macros("WHERE $__timeFilter(time_column)", t0, t0) == \
        "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:00:00Z'"


def epoch(t: datetime.datetime) -> float:
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_grafana_time_series_buckets(conn, protocol):
    time_from, time_to = START + datetime.timedelta(minutes=5), START + datetime.timedelta(minutes=40)
    sql = expand_grafana_macros(replay("grafana/time_series.sql"), time_from, time_to)
    assert 'floor(extract(epoch from ts)/300)*300 AS "time"' in sql
    rows, names = run(conn, sql, protocol=protocol)
    assert names == ["time", "metric", "value"]
    expected = Counter(
        (epoch(ts) // 300 * 300, host) for ts, host, _, _ in ROWS if time_from <= ts <= time_to
    )
    got = {(float(t), host): count for t, host, count in rows}
    assert got == dict(expected)
    assert [(float(t), h) for t, h, _ in rows] == sorted(expected)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_grafana_time_group_wide(conn, protocol):
    time_from, time_to = START, START + datetime.timedelta(minutes=10)
    sql = expand_grafana_macros(replay("grafana/time_group.sql"), time_from, time_to)
    assert "floor(extract(epoch from ts)/60)*60 AS \"time\"" in sql
    rows, names = run(conn, sql, protocol=protocol)
    assert names == ["time", "total", "mean"]
    buckets: dict[float, list] = {}
    for ts, _, value, n in ROWS:
        if time_from <= ts < time_to:
            buckets.setdefault(epoch(ts) // 60 * 60, []).append((value, n))
    assert [float(r[0]) for r in rows] == sorted(buckets)
    for t, total, mean in rows:
        members = buckets[float(t)]
        assert total == sum(n for _, n in members)
        assert mean == pytest.approx(sum(v for v, _ in members) / len(members))


# ---------------------------------------------------------------------------------------------
# Metabase


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metabase_connect(conn, protocol):
    assert run(conn, replay("metabase/can_connect.sql"), protocol=protocol)[0] == [(1,)]
    assert run(conn, replay("metabase/timezone.sql"), protocol=protocol)[0] == [("UTC",)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metabase_enum_types(conn, protocol):
    assert run(conn, replay("metabase/enum_types.sql"), protocol=protocol)[0] == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metabase_sync_tables(conn, protocol):
    rows, names = run(conn, replay("metabase/tables.sql"), (0, "^pg_", "information_schema", "public"), protocol)
    assert names == ["schema", "name", "type", "description", "estimated_row_count"]
    assert [r[:3] for r in rows] == [
        ("public", "hosts", "TABLE"),
        ("public", "metrics", "TABLE"),
        ("public", "busy_hosts", "VIEW"),
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metabase_table_privileges(conn, protocol):
    rows, names = run(conn, replay("metabase/table_privileges.sql"), protocol=protocol)
    assert names == ["role", "schema", "table", "update", "select", "insert", "delete"]
    readable = {(r[1], r[2]) for r in rows if r[4] is True}
    assert readable == {("public", t) for t in TABLES + VIEWS}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metabase_describe_fields(conn, protocol):
    rows, names = run(conn, replay("metabase/fields.sql"), ("public", "metrics", "public", "metrics"), protocol)
    assert names[:5] == ["name", "database-type", "database-position", "table-schema", "table-name"]
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [
        (c[0], i, "public", "metrics") for i, c in enumerate(METRICS_COLUMNS)
    ]
    assert not any(r[5] for r in rows), "no column is a primary key"


def test_metabase_describe_fields_types(conn):
    rows, _ = run(conn, replay("metabase/fields.sql"), ("public", "metrics", "public", "metrics"))
    assert [(r[0], r[1]) for r in rows] == [(c[0], c[2]) for c in METRICS_COLUMNS]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metabase_describe_fks(conn, protocol):
    assert run(conn, replay("metabase/fks.sql"), ("metrics", "public"), protocol)[0] == []


# ---------------------------------------------------------------------------------------------
# DBeaver


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dbeaver_connect(conn, protocol):
    version = run(conn, replay("dbeaver/version.sql"), protocol=protocol)[0]
    assert re.match(r"PostgreSQL \d+\.\d+", version[0][0])
    assert run(conn, replay("dbeaver/current_database.sql"), protocol=protocol)[0] == [("freshet",)]
    rows, names = run(conn, replay("dbeaver/setting.sql"), ("standard_conforming_strings",), protocol)
    assert len(rows) == 1
    assert rows[0][names.index("name")] == "standard_conforming_strings"
    assert rows[0][names.index("setting")] == "on"
    assert run(conn, replay("dbeaver/search_path.sql"), protocol=protocol)[0] == [("public",)]
    assert run(conn, replay("dbeaver/enum_check.sql"), protocol=protocol)[0] == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dbeaver_active_schema(conn, protocol):
    rows, _ = run(conn, replay("dbeaver/current_schema.sql"), protocol=protocol)
    assert rows[0][0] == "public"


def test_dbeaver_session_user_is_the_connected_user(conn):
    rows, _ = run(conn, replay("dbeaver/current_schema.sql"))
    assert rows == [("public", USER)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dbeaver_databases(conn, protocol):
    rows, names = run(conn, replay("dbeaver/database.sql"), ("freshet",), protocol)
    assert len(rows) == 1
    assert rows[0][names.index("datname")] == "freshet"
    assert isinstance(rows[0][0], int)
    rows, names = run(conn, replay("dbeaver/databases.sql"), ("freshet",), protocol)
    assert "freshet" in [r[names.index("datname")] for r in rows]


def test_dbeaver_database_oids_are_stable(conn):
    before, _ = run(conn, replay("dbeaver/databases.sql"), ("freshet",))
    dbeaver_tables(conn)
    after, _ = run(conn, replay("dbeaver/databases.sql"), ("freshet",))
    assert [r[0] for r in after] == [r[0] for r in before]


def schema_oids(conn, protocol="extended") -> dict[str, int]:
    rows, names = run(conn, replay("dbeaver/schemas.sql"), protocol=protocol)
    return {r[names.index("nspname")]: r[0] for r in rows}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dbeaver_navigator_schemas(conn, protocol):
    oids = schema_oids(conn, protocol)
    assert {"public", "pg_catalog"} <= set(oids)
    assert all(isinstance(oid, int) for oid in oids.values())


def test_dbeaver_navigator_lists_information_schema(conn):
    assert "information_schema" in schema_oids(conn)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dbeaver_data_types(conn, protocol):
    rows, names = run(conn, replay("dbeaver/data_types.sql"), protocol=protocol)
    by_name = {r[names.index("typname")]: r[0] for r in rows}
    for _, _, typname, oid in METRICS_COLUMNS:
        assert by_name.get(typname) == oid


def dbeaver_tables(conn, protocol="extended"):
    rows, names = run(conn, replay("dbeaver/tables.sql"), (schema_oids(conn)["public"],), protocol)
    return {r[names.index("relname")]: (r[0], r[names.index("relkind")]) for r in rows}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dbeaver_navigator_tables(conn, protocol):
    tables = dbeaver_tables(conn, protocol)
    assert {name: kind for name, (_, kind) in tables.items()} == {
        "hosts": "r", "metrics": "r", "busy_hosts": "v",
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dbeaver_navigator_columns(conn, protocol):
    metrics_oid = dbeaver_tables(conn)["metrics"][0]
    rows, names = run(conn, replay("dbeaver/columns.sql"), (metrics_oid,), protocol)
    # DBeaver reads atttypid with getLong(), which the JDBC driver also parses from text.
    columns = [(r[names.index("attname")], r[names.index("attnum")], int(r[names.index("atttypid")])) for r in rows]
    assert columns == [(c[0], i + 1, c[3]) for i, c in enumerate(METRICS_COLUMNS)]


def test_dbeaver_column_type_oids_are_numbers(conn):
    metrics_oid = dbeaver_tables(conn)["metrics"][0]
    rows, names = run(conn, replay("dbeaver/columns.sql"), (metrics_oid,))
    assert [r[names.index("atttypid")] for r in rows] == [c[3] for c in METRICS_COLUMNS]


# ---------------------------------------------------------------------------------------------
# JDBC: Debian's PostgreSQL JDBC driver (libpostgresql-jdbc-java) through tests/jdbc/JdbcCheck.java

JDBC_JAR = Path("/usr/share/java/postgresql.jar")
JDBC_SOURCE = Path(__file__).resolve().parents[1] / "jdbc" / "JdbcCheck.java"


# Catalog queries Metabase and DBeaver run as JDBC prepared statements, replayed through the JDBC
# driver itself: (name, replay file, parameters). An int parameter is bound with setLong, as DBeaver
# binds oids.
JDBC_REPLAYS = [
    ("metabase/can_connect", []),
    ("metabase/timezone", []),
    ("metabase/enum_types", []),
    ("metabase/tables", ["I:0", "S:^pg_", "S:information_schema", "S:public"]),
    ("metabase/table_privileges", []),
    ("metabase/fields", ["S:public", "S:metrics", "S:public", "S:metrics"]),
    ("metabase/fks", ["S:metrics", "S:public"]),
    ("dbeaver/version", []),
    ("dbeaver/current_database", []),
    ("dbeaver/setting", ["S:standard_conforming_strings"]),
    ("dbeaver/current_schema", []),
    ("dbeaver/search_path", []),
    ("dbeaver/database", ["S:freshet"]),
    ("dbeaver/databases", ["S:freshet"]),
    ("dbeaver/enum_check", []),
    ("dbeaver/schemas", []),
    ("dbeaver/data_types", []),
    ("dbeaver/tables", ["L:{public}"]),
    ("dbeaver/columns", ["L:{metrics}"]),
]


@pytest.fixture(scope="module")
def jdbc_replays(bi_server, tmp_path_factory):
    """The replay list JdbcCheck reads, and what psycopg returns for each query: name ->
    (row count, first column of every row as the JDBC driver's getString shows it)."""
    with psycopg.connect(bi_server.pg_dsn(USER), autocommit=True) as conn:
        oids = {"public": schema_oids(conn)["public"], "metrics": dbeaver_tables(conn)["metrics"][0]}
        lines, expected = [], {}
        for name, params in JDBC_REPLAYS:
            params = [p.format(**oids) for p in params]
            lines.append("\t".join([name, str(REPLAYS / f"{name}.sql"), *params]))
            values = [int(p[2:]) if p[0] in "IL" else p[2:] for p in params]
            rows, _ = run(conn, replay(f"{name}.sql"), values)
            expected[name] = (str(len(rows)), ",".join("null" if r[0] is None else str(r[0]) for r in rows))
    path = tmp_path_factory.mktemp("jdbc-replays") / "replays.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path, expected


@pytest.fixture(scope="module")
def jdbc_output(bi_server, jdbc_replays, tmp_path_factory):
    """The lines JdbcCheck printed, split at tabs."""
    if not JDBC_JAR.exists() or shutil.which("javac") is None:
        if os.environ.get("FRESHET_REQUIRE_JDBC") == "1":
            pytest.fail("FRESHET_REQUIRE_JDBC=1 but javac or /usr/share/java/postgresql.jar is missing")
        pytest.skip("needs javac and libpostgresql-jdbc-java (.ci/run installs them)")
    classes = tmp_path_factory.mktemp("jdbc")
    subprocess.run(["javac", "-d", str(classes), "-cp", str(JDBC_JAR), str(JDBC_SOURCE)], check=True)
    host, port = bi_server.addresses["pgwire"].rsplit(":", 1)
    result = subprocess.run(
        ["java", "-cp", f"{JDBC_JAR}:{classes}", "JdbcCheck", f"jdbc:postgresql://{host}:{port}/freshet", USER,
         str(jdbc_replays[0])],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def jdbc_lines(output, kind):
    return [line[1:] for line in output if line[0] == kind]


def test_jdbc_checks_raise_no_errors(jdbc_output):
    assert jdbc_lines(jdbc_output, "error") == []


def test_jdbc_product_version(jdbc_output, conn):
    [(name, version, major, minor)] = jdbc_lines(jdbc_output, "product")
    assert name == "PostgreSQL"
    server_version = conn.execute("SHOW server_version").fetchone()[0]
    assert version == server_version
    assert (int(major), int(minor)) == tuple(int(p) for p in server_version.split(".")[:2])


def test_jdbc_get_schemas(jdbc_output):
    schemas = [line[0] for line in jdbc_lines(jdbc_output, "schema")]
    assert "public" in schemas
    assert schemas == sorted(schemas)


def test_jdbc_get_tables(jdbc_output):
    tables = {(schema, name): kind for schema, name, kind in jdbc_lines(jdbc_output, "table")}
    assert tables == {
        ("public", "hosts"): "TABLE",
        ("public", "metrics"): "TABLE",
        ("public", "busy_hosts"): "VIEW",
    }


def test_jdbc_get_columns(jdbc_output):
    columns = [(name, int(position)) for _, name, _, _, position, _ in jdbc_lines(jdbc_output, "column")]
    assert columns == [(c[0], i + 1) for i, c in enumerate(METRICS_COLUMNS)]


def test_jdbc_get_columns_types(jdbc_output):
    # java.sql.Types: TIMESTAMP 93, VARCHAR 12 (the driver's code for text), DOUBLE 8, INTEGER 4;
    # TYPE_NAME is pg_type.typname.
    types = [(name, int(code), type_name) for _, name, code, type_name, _, _ in jdbc_lines(jdbc_output, "column")]
    assert types == [
        ("ts", 93, "timestamp"), ("host", 12, "text"), ("value", 8, "float8"), ("n", 4, "int4"),
    ]


def test_jdbc_prepared_statement(jdbc_output):
    runs = jdbc_lines(jdbc_output, "row")
    assert [int(run) for _, run, _ in runs] == list(range(7))
    cutoff = datetime.datetime(2024, 3, 1, 12, 20)
    expected = "".join(
        f"{host}|{n}|{ts.isoformat(timespec='minutes') if ts.second == 0 else ts.isoformat()}|{value}" + ";"
        for ts, host, value, n in ROWS
        if n >= 5 and host == "b" and ts < cutoff
    )
    assert expected, "the check selects some rows"
    # Every execution, including those after the driver switched to a named server-side
    # statement, returns the same rows.
    assert {rows for _, _, rows in runs} == {expected}


def test_jdbc_replays_of_metabase_and_dbeaver(jdbc_output, jdbc_replays):
    got = {name: (count, first) for name, count, first in jdbc_lines(jdbc_output, "replay")}
    expected = dict(jdbc_replays[1])
    # pgjdbc sends the JVM's time zone in its start-up packet and the session takes it, as
    # PostgreSQL's does; psycopg sends none, so its session keeps the server's default.
    jdbc_zone, default_zone = got.pop("metabase/timezone"), expected.pop("metabase/timezone")
    assert default_zone[1] == "UTC"
    assert jdbc_zone[0] == "1" and jdbc_zone[1] != ""
    assert got == expected
    assert got["metabase/tables"][1] == "public,public,public"
    assert got["dbeaver/columns"] == ("4", "metrics,metrics,metrics,metrics")
