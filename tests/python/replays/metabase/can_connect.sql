-- Source: metabase/metabase src/metabase/driver/sql_jdbc/connection.clj: can-connect? runs this check query
SELECT 1
