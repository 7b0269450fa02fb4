import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
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
 *   error    check  SQLSTATE  message
 *
 * Every check runs even when an earlier one failed; an error line says which and why.
 * Usage: java -cp postgresql.jar:. JdbcCheck jdbc:postgresql://host:port/freshet user
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
