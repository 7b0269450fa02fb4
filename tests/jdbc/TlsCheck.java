import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

/**
 * Connects to Freshet through the PostgreSQL JDBC driver with the URL given (its ssl* parameters
 * choose the TLS mode) and prints one line for tests/python/test_tls.py:
 *
 *   ok     value of SELECT 40 + 2
 *   error  SQLSTATE  message
 *
 * Usage: java -cp postgresql.jar:. TlsCheck jdbc:postgresql://host:port/freshet?sslmode=... user
 */
public class TlsCheck {
    public static void main(String[] args) {
        Properties properties = new Properties();
        properties.setProperty("user", args[1]);
        try (Connection conn = DriverManager.getConnection(args[0], properties);
             Statement statement = conn.createStatement();
             ResultSet rs = statement.executeQuery("SELECT 40 + 2")) {
            rs.next();
            System.out.println("ok\t" + rs.getString(1));
        } catch (SQLException e) {
            System.out.println("error\t" + e.getSQLState() + "\t" + String.valueOf(e.getMessage()).replace('\n', ' '));
        }
    }
}
