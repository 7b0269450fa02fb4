//! The statements of models:
//!
//! ```sql
//! CREATE [OR REPLACE] MODEL [IF NOT EXISTS] name USING als [WITH (option = value, …)] AS query
//! DROP MODEL [IF EXISTS] name
//! REFRESH MODEL name
//! SHOW MODELS
//! ```

use std::collections::BTreeMap;

use super::als::AlsParams;
use super::ModelDefinition;
use crate::error::{EngineError, ErrorKind};
use crate::statement::tokens::{Cursor, RawStatement};
use crate::streaming::statements::parse_duration;

/// A statement about models.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatement {
    Create(CreateModel),
    Drop { name: String, if_exists: bool },
    Refresh { name: String },
    Show,
}

/// `CREATE MODEL`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateModel {
    pub name: String,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub definition: ModelDefinition,
}

const OPTIONS: &str =
    "rank, iterations, regularization, implicit, alpha, seed, refresh_interval, fold_in_source";

fn invalid(option: &str, value: &str, expected: &str) -> EngineError {
    EngineError::new(
        ErrorKind::InvalidParameterValue,
        format!("invalid value '{value}' for model option {option}: expected {expected}"),
    )
}

fn number<T: std::str::FromStr>(
    option: &str,
    value: &str,
    expected: &str,
) -> Result<T, EngineError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(option, value, expected))
}

/// Reads the WITH options of CREATE MODEL.
fn definition(
    options: &BTreeMap<String, String>,
    query: String,
) -> Result<ModelDefinition, EngineError> {
    let mut params = AlsParams::default();
    let mut definition = ModelDefinition {
        params: params.clone(),
        query,
        refresh_interval_ms: None,
        fold_in_source: None,
    };
    for (key, value) in options {
        match key.as_str() {
            "rank" => params.rank = number(key, value, "a positive integer")?,
            "iterations" | "max_iter" => {
                params.iterations = number(key, value, "a positive integer")?
            }
            "regularization" | "reg_param" | "lambda" => {
                params.regularization = number(key, value, "a non-negative number")?
            }
            "alpha" => params.alpha = number(key, value, "a non-negative number")?,
            "seed" => params.seed = number(key, value, "an unsigned integer")?,
            "implicit" | "implicit_prefs" => {
                params.implicit = match value.to_ascii_lowercase().as_str() {
                    "true" | "on" | "1" | "yes" => true,
                    "false" | "off" | "0" | "no" => false,
                    _ => return Err(invalid(key, value, "true or false")),
                }
            }
            "refresh_interval" => {
                definition.refresh_interval_ms =
                    Some(parse_duration(key, value)?.as_millis() as u64)
            }
            "fold_in_source" => definition.fold_in_source = Some(value.to_ascii_lowercase()),
            _ => {
                return Err(EngineError::new(
                    ErrorKind::UndefinedObject,
                    format!("unknown option '{key}' for an ALS model (valid options: {OPTIONS})"),
                ))
            }
        }
    }
    if params.rank == 0 || params.iterations == 0 {
        return Err(EngineError::new(
            ErrorKind::InvalidParameterValue,
            "model options rank and iterations must be at least 1",
        ));
    }
    if !(params.regularization >= 0.0 && params.alpha >= 0.0) {
        return Err(EngineError::new(
            ErrorKind::InvalidParameterValue,
            "model options regularization and alpha must be non-negative numbers",
        ));
    }
    definition.params = params;
    Ok(definition)
}

/// Reads a statement about models; `None` for anything else.
pub(crate) fn parse_model_statement(
    raw: &RawStatement,
) -> Result<Option<ModelStatement>, EngineError> {
    let mut c = Cursor::new(raw);
    if c.keyword("CREATE") {
        let or_replace = c.keywords(&["OR", "REPLACE"]);
        if !c.keyword("MODEL") {
            return Ok(None);
        }
        let if_not_exists = c.keywords(&["IF", "NOT", "EXISTS"]);
        let name = c.name("a model name")?;
        c.expect_keyword("USING", "and the algorithm, e.g. USING als")?;
        let algorithm = c.name("an algorithm")?;
        if algorithm != "als" {
            return Err(EngineError::new(
                ErrorKind::FeatureNotSupported,
                format!("unknown model algorithm '{algorithm}' (known: als)"),
            ));
        }
        let options = if c.keyword("WITH") {
            c.options()?
        } else {
            BTreeMap::new()
        };
        c.expect_keyword("AS", "before the training query")?;
        let query = c.rest_text();
        if query.is_empty() {
            return Err(EngineError::syntax(
                "CREATE MODEL needs a training query after AS",
            ));
        }
        return Ok(Some(ModelStatement::Create(CreateModel {
            name,
            or_replace,
            if_not_exists,
            definition: definition(&options, query)?,
        })));
    }
    if c.keywords(&["DROP", "MODEL"]) {
        let if_exists = c.keywords(&["IF", "EXISTS"]);
        let name = c.name("a model name")?;
        c.expect_end("DROP MODEL")?;
        return Ok(Some(ModelStatement::Drop { name, if_exists }));
    }
    if c.keywords(&["REFRESH", "MODEL"]) {
        let name = c.name("a model name")?;
        c.expect_end("REFRESH MODEL")?;
        return Ok(Some(ModelStatement::Refresh { name }));
    }
    if c.keywords(&["SHOW", "MODELS"]) {
        c.expect_end("SHOW MODELS")?;
        return Ok(Some(ModelStatement::Show));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_model_statement_text(sql: &str) -> Result<Option<ModelStatement>, EngineError> {
        parse_model_statement(&RawStatement::from_text(sql)?)
    }

    #[test]
    fn create_model_with_options() {
        let sql = "CREATE MODEL movie_recs USING als WITH (rank = 12, iterations = 5, regularization = 0.05, implicit = true, alpha = 40, seed = 7, refresh_interval = '10 minutes', fold_in_source = 'Clicks') AS SELECT u, i, r FROM ratings;";
        let Some(ModelStatement::Create(create)) = parse_model_statement_text(sql).unwrap() else {
            panic!("not parsed");
        };
        assert_eq!(create.name, "movie_recs");
        let d = &create.definition;
        assert_eq!(
            (
                d.params.rank,
                d.params.iterations,
                d.params.implicit,
                d.params.seed
            ),
            (12, 5, true, 7)
        );
        assert_eq!(d.params.alpha, 40.0);
        assert_eq!(d.refresh_interval_ms, Some(600_000));
        assert_eq!(d.fold_in_source.as_deref(), Some("clicks"));
        assert_eq!(d.query, "SELECT u, i, r FROM ratings");
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |sql: &str| {
            parse_model_statement_text(sql)
                .unwrap_err()
                .message()
                .to_string()
        };
        assert!(err("CREATE MODEL m USING als WITH (rnak = 3) AS SELECT 1").contains("rnak"));
        assert!(err("CREATE MODEL m USING svd AS SELECT 1").contains("svd"));
        assert!(err("CREATE MODEL m USING als WITH (rank = 0) AS SELECT 1").contains("rank"));
        assert!(
            err("CREATE MODEL m USING als WITH (implicit = maybe) AS SELECT 1").contains("maybe")
        );
        assert!(err("CREATE MODEL m AS SELECT 1").contains("USING"));
        assert_eq!(
            parse_model_statement_text("CREATE TABLE t (a INT)").unwrap(),
            None
        );
        assert_eq!(
            parse_model_statement_text("drop model if exists m").unwrap(),
            Some(ModelStatement::Drop {
                name: "m".to_string(),
                if_exists: true
            })
        );
    }
}
