-- Source: grafana/grafana pkg/tsdb/grafana-postgresql-datasource/macros.go expands the macros of this
-- time-series query (the form Grafana's query builder writes) before sending it.
SELECT
  $__timeGroupAlias(ts,'5m'),
  host AS metric,
  count(*) AS "value"
FROM metrics
WHERE $__timeFilter(ts)
GROUP BY 1,2
ORDER BY 1,2
