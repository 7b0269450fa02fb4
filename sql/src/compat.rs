//! Client compatibility: every accommodation of a client's SQL is a named rule here.
//!
//! Drivers, BI tools and other systems' users send SQL that DataFusion does not plan as
//! written: catalog queries with PostgreSQL-only constructs, Flink's window syntax, `?`
//! placeholders. Each accommodation is a [`Rule`] in [`RULES`], which names the client it is
//! for, why it is needed, the test that replays the client's real query, and a small example
//! that fails without it. The statement parser ([`crate::statement`]) applies them:
//!
//! - [`Stage::Tokens`] rules see the statement's tokens before it is parsed (a syntax the
//!   parser cannot read); a rule that rewrites text has the statement tokenised again;
//! - [`Stage::Statement`] rules rewrite the parsed statement (constructs the planner lacks);
//! - [`Stage::Retry`] rules plan a statement again in another form after a planning error
//!   that no error variant identifies earlier.
//!
//! A session can turn rules off (`SET compat_rules_disabled = 'like-escape, …'`), which is how
//! the test suite proves that each rule is needed: its example fails with the rule off.

use std::borrow::Cow;
use std::collections::HashSet;

use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::EngineError;
use crate::session::Session;
use crate::statement::tokens::RawStatement;

/// When a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Tokens,
    Statement,
    Retry,
}

/// Where a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every frontend.
    All,
    /// Sessions that use `?` placeholders (Flight SQL).
    QuestionMarkPlaceholders,
}

/// One accommodation of a client.
#[derive(Debug)]
pub struct Rule {
    pub name: &'static str,
    /// The client whose SQL needs it.
    pub client: &'static str,
    /// What the client sends and what the rule does with it.
    pub what: &'static str,
    /// The test that replays the client's own query (file and test name).
    pub proof: &'static str,
    pub stage: Stage,
    pub scope: Scope,
    /// Statements to run before the example.
    pub setup: &'static [&'static str],
    /// A statement that plans and runs with the rule and fails without it.
    pub example: &'static str,
}

pub const WINDOW_TABLE_SYNTAX: &str = "window-table-syntax";
pub const GRAFANA_SEARCH_PATH: &str = "grafana-search-path";
pub const ASYNCPG_TYPE_INTROSPECTION: &str = "asyncpg-type-introspection";
pub const ASYNCPG_JIT_CHECK: &str = "asyncpg-jit-check";
pub const QMARK_PLACEHOLDERS: &str = "qmark-placeholders";
pub const PG_CATALOG_CLIENT_QUERIES: &str = "pg-catalog-client-queries";
pub const PG_CATALOG_REWRITES: &str = "pg-catalog-rewrites";
pub const LIKE_ESCAPE: &str = "like-escape";
pub const GENERATE_SUBSCRIPTS: &str = "generate-subscripts";
pub const CORRELATED_SCALAR_SUBQUERIES: &str = "correlated-scalar-subqueries";
pub const CASE_SUBQUERY: &str = "case-subquery";
pub const CURRENT_ROLE: &str = "current-role";
pub const BYTEA_HEX_LITERAL: &str = "bytea-hex-literal";
pub const REGCLASS_CAST: &str = "regclass-cast";
pub const ARRAY_SUBQUERY: &str = "array-subquery";
pub const DUPLICATE_SELECT_NAMES: &str = "duplicate-select-names";

/// Every rule, in the order they apply within a stage.
pub const RULES: &[Rule] = &[
    Rule {
        name: WINDOW_TABLE_SYNTAX,
        client: "Flink SQL users (windowing table-valued functions)",
        what: "TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size)) and HOP(…, slide, size), positional \
               or named, become tumble(t, ts, size) / hop(t, ts, slide, size); upper-case \
               TUMBLE(…) / HOP(…) calls are lower-cased (table functions are looked up by their \
               exact name)",
        proof: "server/tests/streaming.rs::flink_window_syntax_over_the_wire; sql/src/windows/rewrite.rs tests",
        stage: Stage::Tokens,
        scope: Scope::All,
        setup: &["CREATE TABLE compat_events (ts TIMESTAMP, v INT)",
                 "INSERT INTO compat_events VALUES (TIMESTAMP '2024-01-01 00:00:30', 1)"],
        example: "SELECT window_start, count(*) AS n FROM TABLE(TUMBLE(TABLE compat_events, \
                  DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY window_start",
    },
    Rule {
        name: GRAFANA_SEARCH_PATH,
        client: "Grafana (PostgreSQL data source: schema and table pickers)",
        what: "the search-path subquery built from string_to_array(current_setting('search_path')) \
               with array subscripts by a column is replaced by the session's schema names",
        proof: "tests/python/test_bi_replays.py::test_grafana_table_picker_follows_set_search_path",
        stage: Stage::Tokens,
        scope: Scope::All,
        setup: &[],
        example: "SELECT table_name FROM information_schema.tables WHERE table_schema IN (SELECT \
                  CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END FROM \
                  generate_series(array_lower(string_to_array(current_setting('search_path'),','),1), \
                  array_upper(string_to_array(current_setting('search_path'),','),1)) as i, \
                  string_to_array(current_setting('search_path'),',') s)",
    },
    Rule {
        name: ASYNCPG_TYPE_INTROSPECTION,
        client: "asyncpg (type introspection on first use of a type)",
        what: "the recursive typeinfo_tree query over pg_type is replaced by an equivalent \
               non-recursive one",
        proof: "tests/python/test_drivers.py::test_asyncpg_types",
        stage: Stage::Tokens,
        scope: Scope::All,
        setup: &[],
        example: "",
    },
    Rule {
        name: ASYNCPG_JIT_CHECK,
        client: "asyncpg (turns JIT off around its introspection)",
        what: "SELECT current_setting('jit'), set_config('jit', 'off', false) is answered as 'off'",
        proof: "tests/python/test_drivers.py::test_asyncpg_types",
        stage: Stage::Tokens,
        scope: Scope::All,
        setup: &[],
        example: "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new",
    },
    Rule {
        name: QMARK_PLACEHOLDERS,
        client: "ADBC's Python DB-API and other Flight SQL clients (qmark parameter style)",
        what: "each ? placeholder becomes $1, $2, … in order, in statements that use no $n",
        proof: "tests/python/test_flight.py::test_adbc_qmark_parameters_match_psycopg",
        stage: Stage::Tokens,
        scope: Scope::QuestionMarkPlaceholders,
        setup: &[],
        example: "",
    },
    Rule {
        name: PG_CATALOG_CLIENT_QUERIES,
        client: "psql (\\d: policies, statistics, publications), pgcli, DBeaver",
        what: "whole catalog queries DataFusion cannot plan are replaced by \
               datafusion-pg-catalog's equivalents (only statements naming pg_* relations are \
               looked at)",
        proof: "tests/python/test_catalog.py (psql \\d tests)",
        stage: Stage::Statement,
        scope: Scope::All,
        setup: &[],
        example: "",
    },
    Rule {
        name: PG_CATALOG_REWRITES,
        client: "psql, pgJDBC, SQLAlchemy, BI tools (catalog queries)",
        what: "datafusion-pg-catalog's statement rewrites: 'name'::regclass literals, \
               unqualified pg_catalog tables, = ANY(array), COLLATE, OPERATOR(pg_catalog.~) …",
        proof: "tests/python/test_catalog.py, tests/python/test_bi_replays.py",
        stage: Stage::Statement,
        scope: Scope::All,
        setup: &[],
        // (A statement naming pg_* relations would take the client-queries path, which applies
        // these rewrites too.)
        example: "SELECT 'a' COLLATE \"C\" AS a",
    },
    Rule {
        name: LIKE_ESCAPE,
        client: "SQLAlchemy (escapes LIKE patterns with '/')",
        what: "x LIKE p ESCAPE 'c' becomes x LIKE pg_like_escape(p, 'c'): DataFusion only \
               accepts a backslash",
        proof: "tests/python/test_drivers.py::test_sqlalchemy_reflection",
        stage: Stage::Statement,
        scope: Scope::All,
        setup: &[],
        example: "SELECT 'a_b' LIKE 'a/_b' ESCAPE '/' AS matched",
    },
    Rule {
        name: GENERATE_SUBSCRIPTS,
        client: "SQLAlchemy (index and constraint reflection)",
        what: "generate_subscripts(a, d) becomes unnest(pg_array_subscripts(a, d))",
        proof: "tests/python/test_drivers.py::test_sqlalchemy_reflection",
        stage: Stage::Statement,
        scope: Scope::All,
        setup: &[],
        example: "SELECT generate_subscripts(make_array(5, 6, 7), 1) AS i",
    },
    Rule {
        name: CORRELATED_SCALAR_SUBQUERIES,
        client: "SQLAlchemy (column, default and identity reflection)",
        what: "correlated scalar subqueries DataFusion does not decorrelate (not aggregates, \
               outer-only conjuncts, outer columns in the select list) are rewritten into forms \
               it does",
        proof: "tests/python/test_drivers.py::test_sqlalchemy_reflection",
        stage: Stage::Statement,
        scope: Scope::All,
        setup: &[
            "CREATE TABLE compat_a (id INT, t INT)",
            "INSERT INTO compat_a VALUES (1, 10)",
            "CREATE TABLE compat_b (id INT, name TEXT)",
            "INSERT INTO compat_b VALUES (10, 'ten')",
        ],
        example: "SELECT a.id, (SELECT b.name FROM compat_b b WHERE b.id = a.t) AS name FROM compat_a a",
    },
    Rule {
        name: CASE_SUBQUERY,
        client: "SQLAlchemy (column defaults), pgJDBC metadata",
        what: "CASE WHEN c THEN (scalar subquery) END becomes pg_when(c, (subquery)): DataFusion \
               does not decorrelate a subquery in a CASE branch",
        proof: "tests/python/test_drivers.py::test_sqlalchemy_reflection",
        stage: Stage::Statement,
        scope: Scope::All,
        setup: &[],
        // DataFusion 55 decorrelates the simple forms itself; the clients' catalog queries are
        // what still need it.
        example: "",
    },
    Rule {
        name: CURRENT_ROLE,
        client: "psql (\\du), SQLAlchemy",
        what: "current_role, a keyword the parser reads as a column, becomes current_role()",
        proof: "tests/python/test_catalog.py",
        stage: Stage::Statement,
        scope: Scope::All,
        setup: &[],
        example: "SELECT current_role",
    },
    Rule {
        name: BYTEA_HEX_LITERAL,
        client: "psycopg, pgJDBC (bytea literals in hex)",
        what: "'\\x0102'::bytea is hex in PostgreSQL; it becomes decode('0102', 'hex')",
        proof: "tests/python/test_pgwire.py",
        stage: Stage::Statement,
        scope: Scope::All,
        setup: &[],
        example: "SELECT CASE WHEN '\\x0102'::bytea = decode('0102', 'hex') THEN 1 ELSE 1 / 0 END AS same",
    },
    Rule {
        name: REGCLASS_CAST,
        client: "Metabase (casts format('%I.%I', schema, table) to regclass)",
        what: "CAST(x AS regclass) of anything but a literal becomes pg_regclass(x)",
        proof: "tests/python/test_bi_replays.py::test_metabase_describe_fields",
        stage: Stage::Statement,
        scope: Scope::All,
        setup: &[],
        example: "SELECT CAST(format('%I.%I', 'pg_catalog', 'pg_class') AS regclass) AS r",
    },
    Rule {
        name: ARRAY_SUBQUERY,
        client: "psql (\\du, \\d+)",
        what: "ARRAY(subquery) becomes array_transform or coalesce((SELECT array_agg(…)), [])",
        proof: "tests/python/test_catalog.py",
        stage: Stage::Statement,
        scope: Scope::All,
        setup: &[],
        example: "SELECT ARRAY(SELECT name FROM compat_b) AS names",
    },
    Rule {
        name: DUPLICATE_SELECT_NAMES,
        client: "psql and every driver (PostgreSQL allows SELECT 1, 1)",
        what: "a query DataFusion refuses for duplicate expression names is planned again with \
               internal aliases (the client still sees PostgreSQL's names)",
        proof: "server/tests/pg.rs",
        stage: Stage::Retry,
        scope: Scope::All,
        setup: &[],
        example: "SELECT 1, 1",
    },
];

/// The rules a session has on.
#[derive(Debug, Clone, Default)]
pub struct ActiveRules {
    disabled: HashSet<String>,
    question_marks: bool,
}

impl ActiveRules {
    pub(crate) fn for_session(session: &Session) -> Result<Self, EngineError> {
        Ok(Self {
            disabled: session.compat_rules_disabled().into_iter().collect(),
            question_marks: session.question_mark_placeholders(),
        })
    }

    /// Whether the rule applies.
    pub fn on(&self, name: &str) -> bool {
        if self.disabled.contains(name) {
            return false;
        }
        match RULES.iter().find(|r| r.name == name).map(|r| r.scope) {
            Some(Scope::QuestionMarkPlaceholders) => self.question_marks,
            _ => true,
        }
    }
}

/// Refuses a `compat_rules_disabled` value that names an unknown rule.
pub(crate) fn check_rule_names(value: &str) -> Result<(), EngineError> {
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !RULES.iter().any(|r| r.name.eq_ignore_ascii_case(name)) {
            return Err(EngineError::new(
                crate::error::ErrorKind::InvalidParameterValue,
                format!(
                    "unknown compatibility rule '{name}' in compat_rules_disabled (rules: {})",
                    RULES.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The token-stage rules: the statement as the parser should read it, and the rules that
/// changed it.
pub(crate) fn apply_token_rules<'a>(
    raw: Cow<'a, RawStatement>,
    session: &Session,
    rules: &ActiveRules,
) -> Result<(Cow<'a, RawStatement>, Vec<&'static str>), EngineError> {
    let mut raw = raw;
    let mut applied = Vec::new();
    if rules.on(WINDOW_TABLE_SYNTAX) && (raw.has_word("tumble") || raw.has_word("hop")) {
        if let Cow::Owned(text) = crate::windows::rewrite_flink_window_syntax(&raw.text)? {
            raw = Cow::Owned(retokenized(&raw, &text)?);
            applied.push(WINDOW_TABLE_SYNTAX);
        }
    }
    if rules.on(GRAFANA_SEARCH_PATH) && raw.has_word("current_setting") {
        if let Cow::Owned(text) = crate::bi_compat::rewrite_session_lookups(&raw.text, session) {
            raw = Cow::Owned(retokenized(&raw, &text)?);
            applied.push(GRAFANA_SEARCH_PATH);
        }
    }
    if raw.has_word("typeinfo_tree") || raw.has_word("set_config") {
        if let Some((rule, text)) = asyncpg_replacement(&raw.text, rules) {
            raw = Cow::Owned(retokenized(&raw, text)?);
            applied.push(rule);
        }
    }
    if rules.on(QMARK_PLACEHOLDERS) && raw.token_list().any(|t| *t == Token::Question) {
        if let Some(numbered) = number_question_marks(&raw) {
            raw = Cow::Owned(numbered);
            applied.push(QMARK_PLACEHOLDERS);
        }
    }
    Ok((raw, applied))
}

fn retokenized(raw: &RawStatement, text: &str) -> Result<RawStatement, EngineError> {
    let mut rewritten = RawStatement::from_text(text)?;
    rewritten.span = raw.span.clone();
    Ok(rewritten)
}

/// asyncpg's queries Freshet answers with another: the rule and what runs in their place.
fn asyncpg_replacement(sql: &str, rules: &ActiveRules) -> Option<(&'static str, &'static str)> {
    let words: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if rules.on(ASYNCPG_TYPE_INTROSPECTION)
        && words.contains("WITH RECURSIVE typeinfo_tree(")
        && words.contains("ti.oid = any($1::oid[])")
    {
        return Some((ASYNCPG_TYPE_INTROSPECTION, ASYNCPG_TYPE_INTROSPECTION_QUERY));
    }
    // asyncpg turns JIT off around its introspection; Freshet's `jit` setting is always off.
    if rules.on(ASYNCPG_JIT_CHECK)
        && words == "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new"
    {
        return Some((ASYNCPG_JIT_CHECK, "SELECT 'off' AS cur, 'off' AS new"));
    }
    None
}

/// `?` placeholders numbered `$1`, `$2`, … in order. A statement that already uses `$n` keeps
/// its `?` (`None`: it would be ambiguous which is which), and the parser reports them.
fn number_question_marks(raw: &RawStatement) -> Option<RawStatement> {
    let uses_numbers = raw
        .token_list()
        .any(|t| matches!(t, Token::Placeholder(p) if p.starts_with('$')));
    if uses_numbers {
        return None;
    }
    let mut numbered = raw.clone();
    let mut next = 0;
    for tok in &mut numbered.tokens {
        if tok.token == Token::Question {
            next += 1;
            tok.token = Token::Placeholder(format!("${next}"));
        }
    }
    Some(numbered)
}

/// `datafusion-pg-catalog`'s part: its parser (which replaces whole client catalog queries)
/// and its statement rewrites.
pub struct PgCatalogCompat {
    parser: datafusion_pg_catalog::sql::PostgresCompatibilityParser,
    /// Its rewrites for statements that are not catalog queries: all but
    /// `RemoveSubqueryFromProjection`, which replaces a correlated scalar subquery in a select
    /// list by NULL — acceptable for a client's catalog lookup, a wrong answer in a user's
    /// query (Freshet's own rule [`CORRELATED_SCALAR_SUBQUERIES`] plans those).
    rewrites: Vec<Box<dyn datafusion_pg_catalog::sql::rules::SqlStatementRewriteRule>>,
}

impl std::fmt::Debug for PgCatalogCompat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCatalogCompat").finish_non_exhaustive()
    }
}

impl Default for PgCatalogCompat {
    fn default() -> Self {
        use datafusion_pg_catalog::sql::rules::*;
        Self {
            parser: datafusion_pg_catalog::sql::PostgresCompatibilityParser::new(),
            rewrites: vec![
                Box::new(AliasDuplicatedProjectionRewrite),
                Box::new(ResolveUnqualifiedIdentifier),
                Box::new(RewriteArrayAnyAllOperation),
                Box::new(PrependUnqualifiedPgTableName),
                Box::new(StripCallableQualifier),
                Box::new(FixArrayLiteral),
                Box::new(CurrentUserVariableToSessionUserFunctionCall),
                Box::new(StripCollate),
                Box::new(RewritePgCatalogOperator),
                Box::new(RewriteRegCastToSubquery::new()),
                Box::new(FixVersionColumnName),
            ],
        }
    }
}

impl PgCatalogCompat {
    /// A client catalog query read by `datafusion-pg-catalog`'s parser: its replacements of
    /// whole queries, then all its rewrites.
    pub(crate) fn parse_catalog_query(
        &self,
        text: &str,
    ) -> Result<Vec<datafusion::sql::sqlparser::ast::Statement>, EngineError> {
        self.parser
            .parse(text)
            .map_err(|e| EngineError::syntax(e.to_string()))
    }

    /// Its rewrites for any other statement.
    pub(crate) fn rewrite(
        &self,
        mut statement: datafusion::sql::sqlparser::ast::Statement,
    ) -> datafusion::sql::sqlparser::ast::Statement {
        for rule in &self.rewrites {
            statement = rule.rewrite(statement);
        }
        statement
    }
}

/// The statement-stage rules of Freshet's own, on one parsed statement.
pub(crate) fn apply_statement_rules(
    statement: &mut datafusion::sql::sqlparser::ast::Statement,
    rules: &ActiveRules,
) {
    crate::pg_compat::rewrite::rewrite(statement, rules);
}

/// asyncpg's type introspection (`INTRO_LOOKUP_TYPES_13`, sent for types it has no built-in
/// codec for, arrays among them), answered without its recursive CTE and correlated scalar
/// subqueries, which the planner cannot run. Freshet has no domains, ranges or composite
/// types, so the rows asyncpg needs are the requested types and the elements of array types.
/// Every column and the parameter must have types asyncpg decodes without introspection (or
/// it would introspect again): `attrtypoids` (always NULL here) is `text[]`, and the pgwire
/// frontend announces the parameter as `oid[]` when this rule applied.
const ASYNCPG_TYPE_INTROSPECTION_QUERY: &str = include_str!("compat/asyncpg_types.sql");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_are_unique_and_documented() {
        let mut names = HashSet::new();
        for rule in RULES {
            assert!(names.insert(rule.name), "{} twice", rule.name);
            assert!(!rule.client.is_empty() && !rule.what.is_empty() && !rule.proof.is_empty());
        }
    }

    #[test]
    fn question_marks_are_numbered_in_order() {
        let raw = RawStatement::from_text("SELECT ? + 1 WHERE x = ?").unwrap();
        let numbered = number_question_marks(&raw).unwrap();
        let placeholders: Vec<_> = numbered
            .token_list()
            .filter_map(|t| match t {
                Token::Placeholder(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(placeholders, vec!["$1", "$2"]);
        let mixed = RawStatement::from_text("SELECT ? + $1").unwrap();
        assert!(number_question_marks(&mixed).is_none());
    }
}
