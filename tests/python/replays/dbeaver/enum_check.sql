-- Source: dbeaver/dbeaver plugins/org.jkiss.dbeaver.ext.postgresql/src/org/jkiss/dbeaver/ext/postgresql/model/PostgreDataSource.java: initialize() checks pg_enum through PostgreUtils.isMetaObjectExists (servers >= 12)
SELECT * FROM pg_catalog.pg_enum WHERE 1<>1 LIMIT 1
