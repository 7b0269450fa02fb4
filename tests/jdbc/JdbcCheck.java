import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

/**
 * Talks to Freshet through the PostgreSQL JDBC driver the way JDBC tools do, and prints what it
 * saw as tab-separated lines for tests/python/test_bi_replays.py to check:
 *
 *   product  name  version  major  minor
 *   schema   name
 *   table    schema  name  type
 *   column   table  name  java.sql.Types code  type name  position  nullable
 *   row      check  value...
 *   replay   name  row count  first column of every row, comma-separated
 *   error    check  SQLSTATE  message
 *
 * Every check runs even when an earlier one failed; an error line says which and why.
 * Usage: java -cp postgresql.jar:. JdbcCheck jdbc:postgresql://host:port/freshet user [replays.tsv]
 *
 * replays.tsv lists catalog queries to replay as prepared statements, the way Metabase and
 * DBeaver run them: name, path of the SQL file (its leading comment lines are skipped), then one
 * field per parameter, "S:text" for setString, "L:123" for setLong, "I:123" for setInt.
 */
public class JdbcCheck {
    public static void main(String[] args) throws Exception {
        Properties properties = new Properties();
        properties.setProperty("user", args[1]);
        try (Connection conn = DriverManager.getConnection(args[0], properties)) {
            DatabaseMetaData meta = conn.getMetaData();
            run("product", () -> print("product", meta.getDatabaseProductName(), meta.getDatabaseProductVersion(),
                    meta.getDatabaseMajorVersion(), meta.getDatabaseMinorVersion()));
            run("schemas", () -> {
                try (ResultSet rs = meta.getSchemas()) {
                    while (rs.next()) {
                        print("schema", rs.getString("TABLE_SCHEM"));
                    }
                }
            });
            run("tables", () -> {
                try (ResultSet rs = meta.getTables(null, "public", "%", null)) {
                    while (rs.next()) {
                        print("table", rs.getString("TABLE_SCHEM"), rs.getString("TABLE_NAME"), rs.getString("TABLE_TYPE"));
                    }
                }
            });
            run("columns", () -> {
                try (ResultSet rs = meta.getColumns(null, "public", "metrics", "%")) {
                    while (rs.next()) {
                        print("column", rs.getString("TABLE_NAME"), rs.getString("COLUMN_NAME"), rs.getInt("DATA_TYPE"),
                                rs.getString("TYPE_NAME"), rs.getInt("ORDINAL_POSITION"), rs.getString("IS_NULLABLE"));
                    }
                }
            });
            run("prepared", () -> prepared(conn));
            if (args.length > 2) {
                for (String line : Files.readAllLines(Path.of(args[2]))) {
                    String[] fields = line.split("\t");
                    run(fields[0], () -> replay(conn, fields));
                }
            }
        }
    }

    private static void replay(Connection conn, String[] fields) throws SQLException {
        List<String> lines = new ArrayList<>();
        try {
            lines.addAll(Files.readAllLines(Path.of(fields[1])));
        } catch (java.io.IOException e) {
            throw new SQLException("cannot read " + fields[1] + ": " + e.getMessage());
        }
        while (!lines.isEmpty() && lines.get(0).startsWith("--")) {
            lines.remove(0);
        }
        try (PreparedStatement statement = conn.prepareStatement(String.join("\n", lines))) {
            for (int i = 2; i < fields.length; i++) {
                String value = fields[i].substring(2);
                switch (fields[i].charAt(0)) {
                    case 'S' -> statement.setString(i - 1, value);
                    case 'L' -> statement.setLong(i - 1, Long.parseLong(value));
                    case 'I' -> statement.setInt(i - 1, Integer.parseInt(value));
                    default -> throw new IllegalArgumentException("parameter " + fields[i]);
                }
            }
            int count = 0;
            StringBuilder first = new StringBuilder();
            try (ResultSet rs = statement.executeQuery()) {
                while (rs.next()) {
                    first.append(count++ == 0 ? "" : ",").append(rs.getString(1));
                }
            }
            print("replay", fields[0], count, first);
        }
    }

    /**
     * One statement with int, text and timestamp parameters, executed more often than the
     * driver's prepareThreshold (5), so later runs use a named server-side statement.
     */
    private static void prepared(Connection conn) throws SQLException {
        String sql = "SELECT host, n, ts, value FROM metrics WHERE n >= ? AND host = ? AND ts < ? ORDER BY ts";
        try (PreparedStatement statement = conn.prepareStatement(sql)) {
            for (int run = 0; run < 7; run++) {
                statement.setInt(1, 5);
                statement.setString(2, "b");
                statement.setTimestamp(3, Timestamp.valueOf("2024-03-01 12:20:00"));
                StringBuilder rows = new StringBuilder();
                try (ResultSet rs = statement.executeQuery()) {
                    while (rs.next()) {
                        rows.append(rs.getString(1)).append('|').append(rs.getInt(2)).append('|')
                                .append(rs.getTimestamp(3).toLocalDateTime()).append('|').append(rs.getDouble(4)).append(';');
                    }
                }
                print("row", "prepared", run, rows);
            }
        }
    }

    private interface Check {
        void run() throws SQLException;
    }

    private static void run(String name, Check check) {
        try {
            check.run();
        } catch (SQLException e) {
            print("error", name, e.getSQLState(), e.getMessage());
        }
    }

    private static void print(Object... fields) {
        StringBuilder line = new StringBuilder();
        for (int i = 0; i < fields.length; i++) {
            if (i > 0) {
                line.append('\t');
            }
            line.append(String.valueOf(fields[i]).replace('\t', ' ').replace('\n', ' '));
        }
        System.out.println(line);
    }
}
