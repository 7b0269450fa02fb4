//! One client's session: its settings and its DataFusion context.
//!
//! Each connection (pgwire) or authenticated caller (Flight) gets a [`Session`]. Its DataFusion
//! context shares the engine's catalog, object stores and functions, but has its own
//! configuration, so `SET datafusion.execution.batch_size = …` in one session does not change
//! another. PostgreSQL-style settings (`application_name`, `DateStyle`, …) live in the session
//! too: clients set and read them, and a few change behaviour (`statement_timeout`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::prelude::SessionContext;

use crate::error::{EngineError, ErrorKind};

/// A PostgreSQL setting Freshet knows.
struct Setting {
    /// Lower-case name, as looked up.
    key: &'static str,
    /// Name as PostgreSQL reports it in ParameterStatus and SHOW ALL.
    display: &'static str,
    default: &'static str,
    /// Sent to pgwire clients as ParameterStatus when it changes.
    reported: bool,
    /// Fixed by the server.
    read_only: bool,
}

const fn setting(
    key: &'static str,
    display: &'static str,
    default: &'static str,
    reported: bool,
    read_only: bool,
) -> Setting {
    Setting {
        key,
        display,
        default,
        reported,
        read_only,
    }
}

/// The PostgreSQL server version Freshet reports; clients pick features by it.
pub const PG_SERVER_VERSION: &str = "16.6";

const SETTINGS: &[Setting] = &[
    setting("application_name", "application_name", "", true, false),
    setting("client_encoding", "client_encoding", "UTF8", true, false),
    setting("datestyle", "DateStyle", "ISO, MDY", true, false),
    setting("intervalstyle", "IntervalStyle", "postgres", true, false),
    setting("timezone", "TimeZone", "UTC", true, false),
    setting("search_path", "search_path", "public", false, false),
    setting(
        "extra_float_digits",
        "extra_float_digits",
        "1",
        false,
        false,
    ),
    setting("statement_timeout", "statement_timeout", "0", false, false),
    setting("lock_timeout", "lock_timeout", "0", false, false),
    setting(
        "idle_in_transaction_session_timeout",
        "idle_in_transaction_session_timeout",
        "0",
        false,
        false,
    ),
    setting(
        "client_min_messages",
        "client_min_messages",
        "notice",
        false,
        false,
    ),
    setting("bytea_output", "bytea_output", "hex", false, false),
    setting(
        "standard_conforming_strings",
        "standard_conforming_strings",
        "on",
        true,
        false,
    ),
    setting(
        "transaction_isolation",
        "transaction_isolation",
        "read committed",
        false,
        false,
    ),
    setting(
        "default_transaction_isolation",
        "default_transaction_isolation",
        "read committed",
        false,
        false,
    ),
    setting(
        "transaction_read_only",
        "transaction_read_only",
        "off",
        false,
        false,
    ),
    setting(
        "default_transaction_read_only",
        "default_transaction_read_only",
        "off",
        true,
        false,
    ),
    setting(
        "session_authorization",
        "session_authorization",
        "",
        true,
        false,
    ),
    setting("row_security", "row_security", "on", false, false),
    setting("jit", "jit", "off", false, false),
    setting(
        "compat_rules_disabled",
        "compat_rules_disabled",
        "",
        false,
        false,
    ),
    setting("work_mem", "work_mem", "4MB", false, false),
    setting("lc_messages", "lc_messages", "C", false, false),
    setting("lc_monetary", "lc_monetary", "C", false, false),
    setting("lc_numeric", "lc_numeric", "C", false, false),
    setting("lc_time", "lc_time", "C", false, false),
    setting(
        "synchronous_commit",
        "synchronous_commit",
        "on",
        false,
        false,
    ),
    setting(
        "server_version",
        "server_version",
        PG_SERVER_VERSION,
        true,
        true,
    ),
    setting(
        "server_version_num",
        "server_version_num",
        "160006",
        false,
        true,
    ),
    setting("server_encoding", "server_encoding", "UTF8", true, true),
    setting("integer_datetimes", "integer_datetimes", "on", true, true),
    setting("is_superuser", "is_superuser", "on", true, true),
    setting(
        "max_identifier_length",
        "max_identifier_length",
        "63",
        false,
        true,
    ),
    setting("max_index_keys", "max_index_keys", "32", false, true),
    setting("block_size", "block_size", "8192", false, true),
    setting("lc_collate", "lc_collate", "C", false, true),
    setting("lc_ctype", "lc_ctype", "C", false, true),
    setting("in_hot_standby", "in_hot_standby", "off", true, true),
];

fn find_setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The name PostgreSQL shows for a setting (`TimeZone` for `timezone`).
pub fn display_name(key: &str) -> Option<&'static str> {
    find_setting(&key.to_ascii_lowercase()).map(|s| s.display)
}

/// The initial value of the settings clients receive as ParameterStatus at start-up.
pub fn startup_parameters(user: &str) -> Vec<(String, String)> {
    SETTINGS
        .iter()
        .filter(|s| s.reported)
        .map(|s| {
            let value = if s.key == "session_authorization" {
                user.to_string()
            } else {
                s.default.to_string()
            };
            (s.display.to_string(), value)
        })
        .collect()
}

/// Reads a session's PostgreSQL-style setting by lower-case name.
pub(crate) type SettingReader = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A client's session. Cheap to create; dropped with the connection. A clone is the same
/// session (its settings and DataFusion context are shared), e.g. for a task that plans a
/// statement on its behalf.
#[derive(Clone)]
pub struct Session {
    user: String,
    context: SessionContext,
    /// Values set in this session, by lower-case key; absent means the default. Shared with
    /// the session's `current_setting` function.
    values: Arc<Mutex<BTreeMap<String, String>>>,
    /// Counts changes of settings: a plan made before a change is made again (settings such
    /// as `datafusion.*` and `search_path` change what a statement means).
    generation: Arc<AtomicU64>,
    /// Whether `?` is a placeholder (Flight SQL clients) rather than an operator.
    question_marks: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("user", &self.user).finish()
    }
}

impl Session {
    pub(crate) fn new(user: &str, context: SessionContext) -> Self {
        Self {
            user: user.to_string(),
            context,
            values: Arc::new(Mutex::new(BTreeMap::new())),
            generation: Arc::new(AtomicU64::new(0)),
            question_marks: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Self::new("test", SessionContext::new())
    }

    /// This session reads `?` as a placeholder, numbered in order (`qmark` parameter style, as
    /// ADBC's and other Flight SQL clients' DB-API use); see [`crate::compat`].
    pub fn with_question_mark_placeholders(mut self) -> Self {
        self.question_marks = true;
        self
    }

    pub(crate) fn question_mark_placeholders(&self) -> bool {
        self.question_marks
    }

    /// The compatibility rules this session turned off (`compat_rules_disabled`).
    pub(crate) fn compat_rules_disabled(&self) -> Vec<String> {
        self.get("compat_rules_disabled")
            .unwrap_or_default()
            .split(',')
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect()
    }

    /// Which settings a plan was made under: equal values mean nothing changed since.
    pub(crate) fn settings_version(&self) -> (usize, u64) {
        (
            Arc::as_ptr(&self.generation) as usize,
            self.generation.load(Ordering::Acquire),
        )
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The user this session authenticated as (or claimed, without authentication).
    pub fn user(&self) -> &str {
        &self.user
    }

    pub(crate) fn context(&self) -> &SessionContext {
        &self.context
    }

    fn values(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        lock_values(&self.values)
    }

    /// The current value of a PostgreSQL-style setting, `None` for an unknown name.
    pub fn get(&self, key: &str) -> Option<String> {
        let key = key.to_ascii_lowercase();
        if key.starts_with("datafusion.") && !self.values().contains_key(&key) {
            return self.datafusion_setting(&key);
        }
        postgres_setting(&self.values, &self.user, &key)
    }

    /// Reads this session's PostgreSQL-style settings (not `datafusion.*` ones) as they are
    /// when called: what `current_setting()` answers.
    pub(crate) fn setting_reader(&self) -> SettingReader {
        let values = self.values.clone();
        let user = self.user.clone();
        Arc::new(move |key| postgres_setting(&values, &user, &key.to_ascii_lowercase()))
    }

    fn datafusion_setting(&self, key: &str) -> Option<String> {
        let state = self.context.state();
        state
            .config_options()
            .entries()
            .into_iter()
            .find(|entry| entry.key == key)
            .map(|entry| entry.value.unwrap_or_default())
    }

    /// Sets a setting; `None` restores the default. Returns the ParameterStatus to send, if
    /// the setting is one clients track.
    pub fn set(
        &self,
        key: &str,
        value: Option<&str>,
    ) -> Result<Option<(String, String)>, EngineError> {
        if key.starts_with("datafusion.") {
            self.set_datafusion(key, value)?;
            return Ok(None);
        }
        let Some(setting) = find_setting(key) else {
            if key.contains('.') {
                // Like PostgreSQL, a dotted name is a custom setting an application owns.
                self.store(key, value);
                return Ok(None);
            }
            return Err(EngineError::new(
                ErrorKind::UndefinedObject,
                format!("unrecognized configuration parameter \"{key}\""),
            ));
        };
        if setting.read_only {
            return Err(EngineError::new(
                ErrorKind::CantChangeSetting,
                format!("parameter \"{key}\" cannot be changed"),
            ));
        }
        if let (Some(v), "statement_timeout") = (value, setting.key) {
            parse_duration_ms(v)?;
        }
        if let (Some(v), "compat_rules_disabled") = (value, setting.key) {
            crate::compat::check_rule_names(v)?;
        }
        self.store(key, value);
        Ok(setting.reported.then(|| {
            let current = self.get(key).unwrap_or_default();
            (setting.display.to_string(), current)
        }))
    }

    fn store(&self, key: &str, value: Option<&str>) {
        self.changed();
        let mut values = self.values();
        match value {
            Some(v) => values.insert(key.to_string(), v.to_string()),
            None => values.remove(key),
        };
    }

    fn set_datafusion(&self, key: &str, value: Option<&str>) -> Result<(), EngineError> {
        self.changed();
        let state = self.context.state_ref();
        let mut state = state.write();
        let options = state.config_mut().options_mut();
        match value {
            Some(v) => options.set(key, v).map_err(EngineError::from),
            None => Err(EngineError::unsupported(format!(
                "resetting \"{key}\" to its default is not supported; SET it to a value"
            ))),
        }
    }

    /// Forgets every value set in this session (`RESET ALL`, `DISCARD ALL`).
    pub fn reset_all(&self) {
        self.changed();
        self.values().clear();
    }

    /// Every setting with its current value and whether it is the default, for SHOW ALL.
    pub fn all(&self) -> Vec<(String, String)> {
        SETTINGS
            .iter()
            .map(|s| (s.display.to_string(), self.get(s.key).unwrap_or_default()))
            .collect()
    }

    /// `statement_timeout` as a duration; `None` when no timeout applies.
    pub fn statement_timeout(&self) -> Option<Duration> {
        let value = self.get("statement_timeout")?;
        match parse_duration_ms(&value) {
            Ok(0) | Err(_) => None,
            Ok(ms) => Some(Duration::from_millis(ms)),
        }
    }
}

fn lock_values(
    values: &Mutex<BTreeMap<String, String>>,
) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
    // A panic while holding this lock cannot leave the map half-updated: every write is a
    // single insert or remove, so the poisoned value is still consistent.
    values.lock().unwrap_or_else(|p| p.into_inner())
}

/// The value of setting `key` (lower-case): set in the session, or the default.
fn postgres_setting(
    values: &Mutex<BTreeMap<String, String>>,
    user: &str,
    key: &str,
) -> Option<String> {
    if let Some(value) = lock_values(values).get(key) {
        return Some(value.clone());
    }
    if key == "session_authorization" {
        return Some(user.to_string());
    }
    find_setting(key).map(|s| s.default.to_string())
}

/// Parses a PostgreSQL duration setting: a plain number is milliseconds; units ms, s, min, h.
fn parse_duration_ms(value: &str) -> Result<u64, EngineError> {
    let text = value.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| invalid_duration(value))?;
    let factor = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err(invalid_duration(value)),
    };
    if number < 0.0 {
        return Err(invalid_duration(value));
    }
    Ok((number * factor) as u64)
}

fn invalid_duration(value: &str) -> EngineError {
    EngineError::new(
        ErrorKind::InvalidParameterValue,
        format!("invalid value for a duration: \"{value}\" (use e.g. 500, '2s', '1min')"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new("alice", SessionContext::new())
    }

    #[test]
    fn reported_settings_return_parameter_status() {
        let s = session();
        let status = s.set("application_name", Some("psql")).unwrap();
        assert_eq!(
            status,
            Some(("application_name".to_string(), "psql".to_string()))
        );
        assert_eq!(s.get("APPLICATION_NAME").as_deref(), Some("psql"));
        let status = s.set("datestyle", None).unwrap();
        assert_eq!(
            status,
            Some(("DateStyle".to_string(), "ISO, MDY".to_string()))
        );
    }

    #[test]
    fn unknown_and_read_only_settings_are_refused() {
        let s = session();
        assert_eq!(
            s.set("no_such_thing", Some("1")).unwrap_err().kind(),
            ErrorKind::UndefinedObject
        );
        assert_eq!(
            s.set("server_version", Some("9")).unwrap_err().kind(),
            ErrorKind::CantChangeSetting
        );
        assert!(s.set("myapp.flag", Some("x")).is_ok());
    }

    #[test]
    fn statement_timeout_parses_units() {
        let s = session();
        assert_eq!(s.statement_timeout(), None);
        s.set("statement_timeout", Some("2s")).unwrap();
        assert_eq!(s.statement_timeout(), Some(Duration::from_secs(2)));
        assert!(s.set("statement_timeout", Some("soon")).is_err());
    }

    #[test]
    fn datafusion_settings_go_to_the_session_context() {
        let s = session();
        s.set("datafusion.execution.batch_size", Some("1234"))
            .unwrap();
        assert_eq!(
            s.get("datafusion.execution.batch_size").as_deref(),
            Some("1234")
        );
        assert!(s.set("datafusion.execution.no_such", Some("1")).is_err());
    }
}
