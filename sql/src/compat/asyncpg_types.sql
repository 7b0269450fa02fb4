SELECT t.oid AS oid, ns.nspname AS ns, t.typname AS name, t.typtype AS kind,
       CAST(NULL AS INT) AS basetype, e.oid AS elemtype, e.typdelim AS elemdelim,
       CAST(NULL AS INT) AS range_subtype, CAST(NULL AS TEXT[]) AS attrtypoids,
       CAST(NULL AS TEXT[]) AS attrnames, 0 AS depth, CAST(NULL AS TEXT) AS basetype_name,
       e.typname AS elemtype_name, CAST(NULL AS TEXT) AS range_subtype_name
FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_namespace ns ON ns.oid = t.typnamespace
LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typelem <> 0
WHERE t.oid = any($1::oid[])
UNION ALL
SELECT e.oid, ns.nspname, e.typname, e.typtype, NULL, NULL, NULL, NULL, NULL, NULL, 1, NULL,
       NULL, NULL
FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_type e ON e.oid = t.typelem
JOIN pg_catalog.pg_namespace ns ON ns.oid = e.typnamespace
WHERE t.oid = any($1::oid[]) AND t.typelem <> 0
ORDER BY depth DESC