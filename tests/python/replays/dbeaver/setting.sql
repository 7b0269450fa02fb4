-- Source: dbeaver/dbeaver plugins/org.jkiss.dbeaver.ext.postgresql/src/org/jkiss/dbeaver/ext/postgresql/model/PostgreDataSource.java: SettingCache, preloads standard_conforming_strings; parameter 1 = 'standard_conforming_strings'
select * from pg_catalog.pg_settings where name=?
