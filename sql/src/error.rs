//! The engine's one error type.
//!
//! Every failure that reaches a client is an [`EngineError`]: a [`ErrorKind`] that each frontend
//! maps to its own error form in exactly one place (SQLSTATE for pgwire, gRPC status for Flight),
//! and a message written for the person who typed the statement.

use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use freshet_connectors::files::FileError;

/// What went wrong, coarse enough for every protocol to map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The statement could not be parsed.
    Syntax,
    /// A table or view that does not exist.
    UndefinedTable,
    /// A column that does not exist.
    UndefinedColumn,
    /// A column reference matching several columns.
    AmbiguousColumn,
    /// A function that does not exist.
    UndefinedFunction,
    /// A setting, option or other named object that does not exist.
    UndefinedObject,
    /// Creating something that already exists.
    DuplicateObject,
    /// A statement that plans but makes no sense (types, grouping, arity ...).
    InvalidStatement,
    /// A parameter or option value that is not acceptable.
    InvalidParameterValue,
    /// A setting that cannot be changed.
    CantChangeSetting,
    /// Bad data met while executing (cast failure, overflow ...).
    DataException,
    /// Division by zero.
    DivisionByZero,
    /// A NULL where the column does not allow one.
    NotNullViolation,
    /// Not allowed: outside the allowed roots, or not authorised.
    PermissionDenied,
    /// Valid SQL that Freshet does not support.
    FeatureNotSupported,
    /// The statement was cancelled by the client or a timeout.
    Canceled,
    /// A file or object that does not exist.
    UndefinedFile,
    /// An I/O error reading or writing storage.
    Io,
    /// Memory or another resource limit reached.
    ResourcesExhausted,
    /// A statement over one of the server's size limits (statement text length …).
    ProgramLimitExceeded,
    /// A statement too deeply nested to plan (PostgreSQL's "stack depth limit exceeded").
    StatementTooComplex,
    /// A placeholder that no parameter can bind (`$0`, `$70000`).
    UndefinedParameter,
    /// A bug: an invariant did not hold.
    Internal,
}

impl ErrorKind {
    /// The PostgreSQL SQLSTATE code for this kind.
    pub fn sqlstate(self) -> &'static str {
        match self {
            ErrorKind::Syntax => "42601",
            ErrorKind::UndefinedTable => "42P01",
            ErrorKind::UndefinedColumn => "42703",
            ErrorKind::AmbiguousColumn => "42702",
            ErrorKind::UndefinedFunction => "42883",
            ErrorKind::UndefinedObject => "42704",
            ErrorKind::DuplicateObject => "42P07",
            ErrorKind::InvalidStatement => "42000",
            ErrorKind::InvalidParameterValue => "22023",
            ErrorKind::CantChangeSetting => "55P02",
            ErrorKind::DataException => "22000",
            ErrorKind::DivisionByZero => "22012",
            ErrorKind::NotNullViolation => "23502",
            ErrorKind::PermissionDenied => "42501",
            ErrorKind::FeatureNotSupported => "0A000",
            ErrorKind::Canceled => "57014",
            ErrorKind::UndefinedFile => "58P01",
            ErrorKind::Io => "58030",
            ErrorKind::ResourcesExhausted => "53200",
            ErrorKind::ProgramLimitExceeded => "54000",
            ErrorKind::StatementTooComplex => "54001",
            ErrorKind::UndefinedParameter => "42P02",
            ErrorKind::Internal => "XX000",
        }
    }
}

/// An error returned by the engine to a frontend.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    kind: ErrorKind,
    message: String,
}

impl EngineError {
    /// An error of `kind` with a message for the user.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without any prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Shorthand for a statement Freshet does not support.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FeatureNotSupported, message)
    }

    /// Shorthand for a parse error.
    pub fn syntax(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Syntax, message)
    }

    /// Shorthand for an internal error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl From<FileError> for EngineError {
    fn from(err: FileError) -> Self {
        let kind = match &err {
            FileError::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            FileError::NotFound { .. } => ErrorKind::UndefinedFile,
            FileError::InvalidLocation { .. } => ErrorKind::InvalidParameterValue,
            FileError::UnknownOption { .. } => ErrorKind::InvalidParameterValue,
            FileError::Store { .. } | FileError::Io { .. } => ErrorKind::Io,
        };
        EngineError::new(kind, err.to_string())
    }
}

/// DataFusion prefixes every message with its variant; a SQL user wants the message alone.
const DATAFUSION_PREFIXES: &[&str] = &[
    "Error during planning: ",
    "Execution error: ",
    "SQL error: ",
    "This feature is not implemented: ",
    "Schema error: ",
    "Invalid or Unsupported Configuration: ",
    "Arrow error: ",
    "External error: ",
    "Object Store error: ",
    "IO error: ",
    "Resources exhausted: ",
    "Optimizer rule ",
];

fn strip_prefixes(message: &str) -> String {
    let mut text = message.trim();
    loop {
        let before = text;
        for prefix in DATAFUSION_PREFIXES {
            if let Some(rest) = text.strip_prefix(prefix) {
                text = rest;
            }
        }
        if before == text {
            return text.to_string();
        }
    }
}

fn classify_arrow(err: &ArrowError) -> ErrorKind {
    match err {
        ArrowError::DivideByZero => ErrorKind::DivisionByZero,
        ArrowError::CastError(_) | ArrowError::ParseError(_) | ArrowError::ComputeError(_) => {
            ErrorKind::DataException
        }
        ArrowError::ArithmeticOverflow(_) => ErrorKind::DataException,
        ArrowError::MemoryError(_) => ErrorKind::ResourcesExhausted,
        ArrowError::IoError(_, _) => ErrorKind::Io,
        _ => ErrorKind::Internal,
    }
}

fn classify_plan_message(message: &str) -> ErrorKind {
    let lower = message.to_ascii_lowercase();
    if lower.contains("not found") && (lower.contains("table") || lower.contains("view")) {
        ErrorKind::UndefinedTable
    } else if lower.contains("invalid function")
        || lower.contains("function") && lower.contains("not found")
    {
        ErrorKind::UndefinedFunction
    } else if lower.contains("already exists") {
        ErrorKind::DuplicateObject
    } else if lower.contains("non-nullable") || lower.contains("not null") {
        ErrorKind::NotNullViolation
    } else if lower.contains("no field named") {
        ErrorKind::UndefinedColumn
    } else {
        ErrorKind::InvalidStatement
    }
}

fn classify(err: &DataFusionError) -> ErrorKind {
    match err {
        DataFusionError::SQL(_, _) => ErrorKind::Syntax,
        DataFusionError::Plan(message) => classify_plan_message(message),
        DataFusionError::SchemaError(schema_error, _) => match schema_error.as_ref() {
            SchemaError::FieldNotFound { .. } => ErrorKind::UndefinedColumn,
            SchemaError::AmbiguousReference { .. } => ErrorKind::AmbiguousColumn,
            _ => ErrorKind::InvalidStatement,
        },
        DataFusionError::NotImplemented(_) => ErrorKind::FeatureNotSupported,
        DataFusionError::Configuration(message) => {
            if message.contains("not found") || message.contains("Unrecognized") {
                ErrorKind::UndefinedObject
            } else {
                ErrorKind::InvalidParameterValue
            }
        }
        DataFusionError::ArrowError(arrow, _) => classify_arrow(arrow),
        DataFusionError::Execution(message) => {
            let lower = message.to_ascii_lowercase();
            if lower.contains("divide by zero") || lower.contains("division by zero") {
                ErrorKind::DivisionByZero
            } else if lower.contains("cast")
                || lower.contains("overflow")
                || lower.contains("parse")
            {
                ErrorKind::DataException
            } else if lower.contains("already exists") {
                ErrorKind::DuplicateObject
            } else if lower.contains("non-nullable") {
                ErrorKind::NotNullViolation
            } else if lower.contains("not found") && lower.contains("table") {
                ErrorKind::UndefinedTable
            } else {
                ErrorKind::InvalidStatement
            }
        }
        DataFusionError::ResourcesExhausted(_) => ErrorKind::ResourcesExhausted,
        DataFusionError::ObjectStore(store) => match store.as_ref() {
            object_store::Error::NotFound { .. } => ErrorKind::UndefinedFile,
            object_store::Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        },
        DataFusionError::IoError(io) => match io.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::UndefinedFile,
            std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        },
        DataFusionError::ParquetError(_) => ErrorKind::Io,
        DataFusionError::External(inner) => {
            if let Some(engine) = inner.downcast_ref::<EngineError>() {
                engine.kind()
            } else if let Some(file) = inner.downcast_ref::<FileError>() {
                EngineError::from(clone_file_error(file)).kind()
            } else if let Some(store) = inner.downcast_ref::<object_store::Error>() {
                match store {
                    object_store::Error::NotFound { .. } => ErrorKind::UndefinedFile,
                    object_store::Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
                    _ => ErrorKind::Io,
                }
            } else {
                ErrorKind::Internal
            }
        }
        _ => ErrorKind::Internal,
    }
}

/// FileError is not Clone (it holds io errors); only its kind matters for classification.
fn clone_file_error(err: &FileError) -> FileError {
    match err {
        FileError::PermissionDenied { path, roots } => FileError::PermissionDenied {
            path: path.clone(),
            roots: roots.clone(),
        },
        FileError::NotFound { path } => FileError::NotFound { path: path.clone() },
        other => FileError::InvalidLocation {
            location: String::new(),
            reason: other.to_string(),
        },
    }
}

impl From<DataFusionError> for EngineError {
    fn from(err: DataFusionError) -> Self {
        let root = err.find_root();
        if let DataFusionError::External(inner) = root {
            if let Some(engine) = inner.downcast_ref::<EngineError>() {
                return engine.clone();
            }
        }
        let kind = classify(root);
        let message = strip_prefixes(&root.to_string());
        EngineError::new(kind, message)
    }
}

impl From<ArrowError> for EngineError {
    fn from(err: ArrowError) -> Self {
        EngineError::new(classify_arrow(&err), strip_prefixes(&err.to_string()))
    }
}

impl From<EngineError> for DataFusionError {
    fn from(err: EngineError) -> Self {
        DataFusionError::External(Box::new(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planning_prefix_is_stripped_and_missing_table_is_classified() {
        let err = EngineError::from(DataFusionError::Plan(
            "table 'freshet.public.nope' not found".to_string(),
        ));
        assert_eq!(err.kind(), ErrorKind::UndefinedTable);
        assert_eq!(err.message(), "table 'freshet.public.nope' not found");
        assert_eq!(err.kind().sqlstate(), "42P01");
    }

    #[test]
    fn engine_error_survives_a_round_trip_through_datafusion() {
        let original = EngineError::new(ErrorKind::PermissionDenied, "no");
        let wrapped = DataFusionError::Context(
            "while scanning".to_string(),
            Box::new(DataFusionError::from(original)),
        );
        let back = EngineError::from(wrapped);
        assert_eq!(back.kind(), ErrorKind::PermissionDenied);
        assert_eq!(back.message(), "no");
    }

    #[test]
    fn division_by_zero_maps_to_its_sqlstate() {
        let err = EngineError::from(DataFusionError::ArrowError(
            Box::new(ArrowError::DivideByZero),
            None,
        ));
        assert_eq!(err.kind().sqlstate(), "22012");
    }
}
