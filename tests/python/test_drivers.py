"""Python drivers and psql against the pgwire frontend: types in text and binary, parameters,
result column names, start-up parameters, errors that leave the connection usable.

Expected text forms are PostgreSQL's own (what PostgreSQL 16 prints for the same query).
"""

import asyncio
import datetime as dt
import decimal
import os
import subprocess

import asyncpg
import pandas as pd
import psycopg
import psycopg2
import pytest
import sqlalchemy

UTC = dt.timezone.utc

# One row of every type the engine returns, with the values PostgreSQL's drivers decode.
ALL_TYPES = """
SELECT 7::int2 AS i2, 42::int4 AS i4, 9000000000::int8 AS i8,
       1.5::float4 AS f4, 2.0::float8 AS f8, 1.50::numeric(5,2) AS num,
       'héllo'::text AS txt, true AS flag,
       DATE '2020-01-02' AS d, TIME '12:34:56.5' AS tm,
       TIMESTAMP '2020-01-02 03:04:05' AS ts,
       TIMESTAMPTZ '2020-01-02 03:04:05+02' AS tstz,
       INTERVAL '1 day 2 hours' AS iv,
       decode('0102ff', 'hex') AS bin,
       ARRAY[1, 2, 3] AS ints, ARRAY['a', 'b c'] AS texts, ARRAY[1.5, 2.0] AS floats,
       NULL AS nothing
"""

EXPECTED = {
    "i2": 7,
    "i4": 42,
    "i8": 9000000000,
    "f4": 1.5,
    "f8": 2.0,
    "num": decimal.Decimal("1.50"),
    "txt": "héllo",
    "flag": True,
    "d": dt.date(2020, 1, 2),
    "tm": dt.time(12, 34, 56, 500000),
    "ts": dt.datetime(2020, 1, 2, 3, 4, 5),
    "tstz": dt.datetime(2020, 1, 2, 1, 4, 5, tzinfo=UTC),
    "iv": dt.timedelta(days=1, hours=2),
    "bin": b"\x01\x02\xff",
    "ints": [1, 2, 3],
    "texts": ["a", "b c"],
    "floats": [1.5, 2.0],
    "nothing": None,
}

# PostgreSQL type OIDs of the columns above (ARRAY[1, 2, 3] is int8[]: integer literals are
# bigint in Freshet; ARRAY[1.5, 2.0] is float8[]).
EXPECTED_OIDS = {
    "i2": 21, "i4": 23, "i8": 20, "f4": 700, "f8": 701, "num": 1700, "txt": 25, "flag": 16,
    "d": 1082, "tm": 1083, "ts": 1114, "tstz": 1184, "iv": 1186, "bin": 17, "ints": 1016,
    "texts": 1009, "floats": 1022, "nothing": 25,
}


def psql(server, *commands: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    args = ["psql", "-X", "-v", "ON_ERROR_STOP=0", "-h", "127.0.0.1", "-p", str(server.pg_port),
            "-U", "pytest", "-d", "freshet", *extra]
    for command in commands:
        args += ["-c", command]
    return subprocess.run(args, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PGCONNECT_TIMEOUT="10"))


# ---- psycopg 3 ---------------------------------------------------------------------------

@pytest.mark.parametrize("binary", [False, True])
def test_psycopg3_decodes_every_type(server, binary):
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        with conn.cursor(binary=binary) as cur:
            cur.execute(ALL_TYPES)
            row = cur.fetchone()
            names = [d.name for d in cur.description]
            oids = {d.name: d.type_code for d in cur.description}
        assert dict(zip(names, row)) == EXPECTED
        assert oids == EXPECTED_OIDS


# Arrow types SQL has no literal for, made with arrow_cast, with their PostgreSQL types.
ARROW_TYPES = """
SELECT arrow_cast(-5, 'Int8') AS i1, arrow_cast(200, 'UInt8') AS u1,
       arrow_cast(60000, 'UInt16') AS u2, arrow_cast(4000000000, 'UInt32') AS u4,
       arrow_cast(18446744073709551615, 'UInt64') AS u8, arrow_cast(1.25, 'Float16') AS half,
       arrow_cast('l', 'LargeUtf8') AS large, arrow_cast('v', 'Utf8View') AS view,
       arrow_cast(1.5, 'Decimal256(40, 3)') AS wide, arrow_cast(-0.0012, 'Decimal128(10, 4)') AS small,
       arrow_cast(arrow_cast(90000000, 'Int64'), 'Duration(Microsecond)') AS dur,
       arrow_cast(TIMESTAMP '2020-01-02 03:04:05', 'Timestamp(Second, None)') AS ts_s,
       arrow_cast(arrow_cast(45296000000, 'Int64'), 'Time64(Microsecond)') AS t64,
       ARRAY[TIMESTAMP '2020-01-02 03:04:05'] AS ts_arr, ARRAY[INTERVAL '1 day'] AS iv_arr,
       ARRAY[1.50::numeric(5,2)] AS num_arr, ARRAY[1.5, NULL] AS float_arr,
       CAST(NULL AS DOUBLE) AS null_f8, CAST(NULL AS TIMESTAMP) AS null_ts,
       CAST(NULL AS INTERVAL) AS null_iv
"""

ARROW_EXPECTED = {
    "i1": (-5, 21), "u1": (200, 21), "u2": (60000, 23), "u4": (4000000000, 20),
    "u8": (decimal.Decimal("18446744073709551615"), 1700), "half": (1.25, 700),
    "large": ("l", 25), "view": ("v", 25), "wide": (decimal.Decimal("1.500"), 1700),
    "small": (decimal.Decimal("-0.0012"), 1700), "dur": (dt.timedelta(seconds=90), 1186),
    "ts_s": (dt.datetime(2020, 1, 2, 3, 4, 5), 1114), "t64": (dt.time(12, 34, 56), 1083),
    "ts_arr": ([dt.datetime(2020, 1, 2, 3, 4, 5)], 1115), "iv_arr": ([dt.timedelta(days=1)], 1187),
    "num_arr": ([decimal.Decimal("1.50")], 1231), "float_arr": ([1.5, None], 1022),
    "null_f8": (None, 701), "null_ts": (None, 1114), "null_iv": (None, 1186),
}


@pytest.mark.parametrize("binary", [False, True])
def test_psycopg3_decodes_arrow_only_types(server, binary):
    with psycopg.connect(server.pg_dsn(), autocommit=True) as conn:
        with conn.cursor(binary=binary) as cur:
            cur.execute(ARROW_TYPES)
            row = cur.fetchone()
            got = {d.name: (value, d.type_code) for d, value in zip(cur.description, row)}
        assert got == ARROW_EXPECTED


def test_psycopg3_server_side_parameters_round_trip(server):
    values = [
        7, 2**40, 1.25, "héllo", True, False,
        dt.date(2020, 1, 2),
        dt.time(12, 34, 56, 250000),
        dt.datetime(2020, 1, 2, 3, 4, 5, 123456),
        dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC),
        decimal.Decimal("12.345"),
        b"\x00\x01\xff",
        dt.timedelta(days=1, hours=2, microseconds=5),
        [1, 2, 3], [1.5, -2.5], [True, False],
    ]
    # prepare_threshold=0: every statement is prepared (Parse with the parameter types,
    # Describe, Bind, Execute), then executed again from the prepared statement.
    with psycopg.connect(server.pg_dsn(), autocommit=True, prepare_threshold=0) as conn:
        for binary in (False, True):
            placeholder = "%b" if binary else "%t"
            with conn.cursor(binary=binary) as cur:
                for value in values:
                    for _ in range(2):
                        cur.execute(f"SELECT {placeholder} AS v", (value,))
                        assert cur.fetchone() == (value,), (binary, value)
                # Text arrays need a binary parameter: psycopg sends text ones untyped, and an
                # untyped parameter is text, in PostgreSQL as here.
                cur.execute("SELECT %b AS v", (["a", "b c", None],))
                assert cur.fetchone() == (["a", "b c", None],)
                # Several parameters of different types, typed by the query.
                cur.execute(
                    f"SELECT {placeholder} + 1 AS n, upper({placeholder}) AS s,"
                    f" {placeholder}::date + 1 AS next_day",
                    (41, "abc", dt.date(2020, 2, 28)),
                )
                assert cur.fetchone() == (42, "ABC", dt.date(2020, 2, 29))
        # A bad statement fails alone; the connection goes on.
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table WHERE a = %s", (1,))
        assert conn.execute("SELECT %s::int8 * 2", (21,)).fetchone() == (42,)


def test_result_columns_are_named_like_postgresql(server):
    with psycopg.connect(server.pg_dsn(user="alice"), autocommit=True) as conn:
        cur = conn.execute(
            "SELECT 1, 2.0::float8, now(), version(), current_user, session_user,"
            " current_schema, count(*), a, a::text, 'x'::varchar, CASE WHEN a > 0 THEN 1 END,"
            " ARRAY[a], 1 + a FROM (VALUES (1)) t(a) GROUP BY a"
        )
        assert [d.name for d in cur.description] == [
            "?column?", "float8", "now", "version", "current_user", "session_user",
            "current_schema", "count", "a", "a", "varchar", "case", "array", "?column?",
        ]
        row = cur.fetchone()
        assert row[4] == "alice" and row[5] == "alice" and row[6] == "public"
        assert row[3].startswith("PostgreSQL 16")
        # Output names still work in ORDER BY, and identical select items are allowed.
        cur = conn.execute(
            "SELECT a AS x, a * 10 FROM (VALUES (1), (3), (2)) t(a) ORDER BY x DESC"
        )
        assert [d.name for d in cur.description] == ["x", "?column?"]
        assert cur.fetchall() == [(3, 30), (2, 20), (1, 10)]
        cur = conn.execute("SELECT 1, 1, 'a' AS a, 'a' AS a")
        assert [d.name for d in cur.description] == ["?column?", "?column?", "a", "a"]
        assert cur.fetchone() == (1, 1, "a", "a")


def test_startup_parameters_and_session_time_zone(server):
    dsn = server.pg_dsn(user="carol") + " application_name=reports options='-c TimeZone=Asia/Kolkata'"
    with psycopg.connect(dsn, autocommit=True) as conn:
        status = conn.info.parameter_status
        assert status("server_version") == "16.6"
        assert status("server_encoding") == "UTF8"
        assert status("client_encoding") == "UTF8"
        assert status("DateStyle") == "ISO, MDY"
        assert status("integer_datetimes") == "on"
        assert status("standard_conforming_strings") == "on"
        assert status("IntervalStyle") == "postgres"
        assert status("is_superuser") == "on"
        assert status("session_authorization") == "carol"
        assert status("application_name") == "reports"
        assert status("TimeZone") == "Asia/Kolkata"
        assert conn.execute("SHOW application_name").fetchone() == ("reports",)
        # timestamptz values are shown in the session's zone: the same instant, at +05:30.
        value = conn.execute("SELECT TIMESTAMPTZ '2020-01-02 03:04:05+00'").fetchone()[0]
        assert value == dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert value.utcoffset() == dt.timedelta(hours=5, minutes=30)
        # SET application_name reports the new value as ParameterStatus.
        conn.execute("SET application_name = 'nightly'")
        assert status("application_name") == "nightly"


# ---- psycopg2 ----------------------------------------------------------------------------

def test_psycopg2_parameters_types_and_description(server):
    conn = psycopg2.connect(server.pg_dsn())
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute("SELECT %s::int4 + 1 AS n, %s AS s, %s::float8 / 2 AS half, %s AS d",
                    (41, "hi", 5.0, dt.date(2021, 3, 4)))
        assert cur.fetchone() == (42, "hi", 2.5, dt.date(2021, 3, 4))
        assert [d.name for d in cur.description] == ["n", "s", "half", "d"]

        cur.execute(ALL_TYPES)
        row = dict(zip([d.name for d in cur.description], cur.fetchone()))
        row["bin"] = bytes(row["bin"])  # psycopg2 returns memoryview for bytea
        assert row == EXPECTED
        assert {d.name: d.type_code for d in cur.description} == EXPECTED_OIDS

        cur.execute("SELECT 1, count(*), now() FROM (VALUES (1)) t(a)")
        assert [d.name for d in cur.description] == ["?column?", "count", "now"]

        with pytest.raises(psycopg2.errors.UndefinedTable):
            cur.execute("SELECT * FROM no_such_table")
        cur.execute("SELECT %s || '!'", ("still alive",))
        assert cur.fetchone() == ("still alive!",)
    finally:
        conn.close()


# ---- asyncpg -----------------------------------------------------------------------------

def test_asyncpg_arrays_timestamps_prepared_statements_and_pool(server):
    async def scenario():
        kwargs = dict(host="127.0.0.1", port=server.pg_port, user="pytest", database="freshet")
        conn = await asyncpg.connect(**kwargs)
        try:
            # int[] has no built-in codec in asyncpg: this runs its type introspection.
            row = await conn.fetchrow(
                "SELECT ARRAY[1, 2, 3]::int[] AS a, TIMESTAMP '2020-01-02 03:04:05' AS t,"
                " TIMESTAMPTZ '2020-01-02 03:04:05+02' AS tz, ARRAY['x', 'y'] AS s"
            )
            assert row["a"] == [1, 2, 3]
            assert row["t"] == dt.datetime(2020, 1, 2, 3, 4, 5)
            assert row["tz"] == dt.datetime(2020, 1, 2, 1, 4, 5, tzinfo=UTC)
            assert row["s"] == ["x", "y"]

            statement = await conn.prepare("SELECT $1::int8 + 1 AS n, upper($2::text) AS s")
            assert [a.name for a in statement.get_attributes()] == ["n", "s"]
            for i in range(3):
                assert await statement.fetchrow(i, "ab") == (i + 1, "AB")
            assert await conn.fetchval("SELECT $1::float8 * 2", 1.25) == 2.5
            assert await conn.fetchval("SELECT $1::timestamp", dt.datetime(2021, 5, 6, 7, 8, 9)) \
                == dt.datetime(2021, 5, 6, 7, 8, 9)

            with pytest.raises(asyncpg.exceptions.UndefinedTableError):
                await conn.fetch("SELECT * FROM no_such_table")
            assert await conn.fetchval("SELECT 5") == 5
        finally:
            await conn.close()

        # On release, the pool resets each connection (pg_advisory_unlock_all(), CLOSE ALL,
        # UNLISTEN *, RESET ALL) and hands it out again.
        pool = await asyncpg.create_pool(min_size=1, max_size=2, **kwargs)
        try:
            pids = set()
            for i in range(10):
                async with pool.acquire() as pooled:
                    await pooled.execute("SET application_name = 'borrowed'")
                    assert await pooled.fetchval("SELECT $1::int4 * 2", i) == 2 * i
                    pids.add(pooled.get_server_pid())
            assert len(pids) <= 2
            async with pool.acquire() as pooled:
                # RESET ALL on release forgot the SET of the previous borrower.
                assert await pooled.fetchval("SHOW application_name") == ""
            results = await asyncio.gather(*(pool.fetchval("SELECT $1::int8", i) for i in range(6)))
            assert results == list(range(6))
        finally:
            await pool.close()

    asyncio.run(scenario())


# ---- pandas ------------------------------------------------------------------------------

PANDAS_QUERY = """
SELECT a::int8 AS i, a * 1.5::float8 AS f, TIMESTAMP '2020-01-02 03:04:05' AS t,
       'row ' || a::text AS s
FROM (VALUES (1), (2)) v(a) ORDER BY a
"""


def check_frame(frame: pd.DataFrame):
    assert list(frame.columns) == ["i", "f", "t", "s"]
    assert frame["i"].dtype == "int64"
    assert frame["f"].dtype == "float64"
    assert pd.api.types.is_datetime64_dtype(frame["t"])
    # object before pandas 3, its dedicated str dtype since.
    assert pd.api.types.is_string_dtype(frame["s"])
    assert frame["i"].tolist() == [1, 2]
    assert frame["f"].tolist() == [1.5, 3.0]
    assert frame["t"].tolist() == [pd.Timestamp("2020-01-02 03:04:05")] * 2
    assert frame["s"].tolist() == ["row 1", "row 2"]


def test_pandas_read_sql_through_sqlalchemy_and_psycopg(server):
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg2://pytest@127.0.0.1:{server.pg_port}/freshet"
    )
    try:
        check_frame(pd.read_sql(PANDAS_QUERY, engine))
        check_frame(pd.read_sql(sqlalchemy.text(PANDAS_QUERY), engine))
    finally:
        engine.dispose()
    with psycopg.connect(server.pg_dsn()) as conn:
        with pytest.warns(UserWarning):  # pandas prefers SQLAlchemy; a DB-API connection works
            check_frame(pd.read_sql(PANDAS_QUERY, conn))


# ---- psql --------------------------------------------------------------------------------

def test_psql_text_forms_are_postgresqls(server):
    result = psql(
        server,
        "SELECT 2.0::float8, 1e20::float8, 0.1::float8, 1.5::float4, true, false,"
        " decode('0102', 'hex'), TIMESTAMP '2020-01-02 03:04:05', TIMESTAMP '2020-01-02 03:04:05.25',"
        " TIMESTAMPTZ '2020-01-02 03:04:05+02', TIME '12:34:56', INTERVAL '1 day 2 hours',"
        " INTERVAL '-1 day 2 hours', 1.50::numeric(5,2), ARRAY[1.5, 2.0], NULL",
        extra=("-A", "-t", "-F", "|"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split("|") == [
        "2", "1e+20", "0.1", "1.5", "t", "f", "\\x0102", "2020-01-02 03:04:05",
        "2020-01-02 03:04:05.25", "2020-01-02 01:04:05+00", "12:34:56", "1 day 02:00:00",
        "-1 days +02:00:00", "1.50", "{1.5,2}", "",
    ]


def test_psql_expanded_output_timing_and_copy(server):
    result = psql(server, "\\x on", "SELECT 1 AS one, 'two' AS two, 2.5::float8 AS three")
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "Expanded display is on." in lines
    assert any(line.startswith("-[ RECORD 1 ]") for line in lines)
    assert "one   | 1" in lines and "two   | two" in lines and "three | 2.5" in lines

    result = psql(server, "\\timing on", "SELECT 42 AS answer")
    assert result.returncode == 0, result.stderr
    assert "Timing is on." in result.stdout
    assert any(line.startswith("Time: ") and line.endswith(" ms") for line in result.stdout.splitlines())
    assert " answer " in result.stdout and "     42" in result.stdout

    query = ("SELECT a AS id, 'x,y' AS label, CASE WHEN a = 2 THEN NULL ELSE a * 0.5::float8 END AS half"
             " FROM (VALUES (1), (2)) t(a) ORDER BY a")
    result = psql(server, f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER)")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "id,label,half\n1,\"x,y\",0.5\n2,\"x,y\",\n"
    result = psql(server, f"COPY ({query}) TO STDOUT")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1\tx,y\t0.5\n2\tx,y\t\\N\n"

    # An error on the way does not end the session: the next command runs.
    with_error = server.work_dir / "with_error.sql"
    with_error.write_text("SELECT * FROM no_such_table;\nSELECT 'after' AS status;\n")
    result = psql(server, extra=("-f", str(with_error)))
    assert "no_such_table" in result.stderr
    assert "after" in result.stdout
