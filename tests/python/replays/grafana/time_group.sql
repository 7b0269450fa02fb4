-- Source: grafana/grafana pkg/tsdb/grafana-postgresql-datasource/macros.go: $__timeGroup not followed by a
-- comma (no alias added), $__timeFrom/$__timeTo, in a wide-format query.
SELECT $__timeGroup(ts, '1m') AS "time", sum(n) AS total, avg(value) AS mean
FROM metrics
WHERE ts >= $__timeFrom() AND ts < $__timeTo()
GROUP BY 1
ORDER BY 1
