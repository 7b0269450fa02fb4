-- Source: dbeaver/dbeaver plugins/org.jkiss.dbeaver.ext.postgresql/src/org/jkiss/dbeaver/ext/postgresql/model/PostgreDatabase.java: readDatabaseInfo() for the connection's database; parameter 1 = 'freshet'
SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname=?
