-- Source: metabase/metabase src/metabase/driver/postgres.clj: driver/db-default-timezone (prepared statement)
show timezone;
