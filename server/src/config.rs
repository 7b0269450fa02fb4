//! Server configuration: command-line flags, environment variables and an optional TOML file.
//!
//! Precedence, highest first: a flag on the command line, its `FRESHET_*` environment
//! variable, the config file (`--config FILE`), the built-in default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use freshet_sql::limits::StatementLimits;
use freshet_sql::streaming::statements::parse_duration;
use freshet_sql::StreamDefaults;
use serde::Deserialize;

/// Flags shared by `freshet serve` and `freshet demo`.
#[derive(Debug, Clone, Args, Default)]
pub struct ServeArgs {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, env = "FRESHET_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for everything the server remembers [default: ./freshet-data].
    #[arg(long, env = "FRESHET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL wire protocol address; port 0 picks a free port [default: 127.0.0.1:5433].
    #[arg(long, env = "FRESHET_PG_ADDR")]
    pub pg_addr: Option<SocketAddr>,
    /// Arrow Flight SQL address [default: 127.0.0.1:50051].
    #[arg(long, env = "FRESHET_FLIGHT_ADDR")]
    pub flight_addr: Option<SocketAddr>,
    /// HTTP address for /health and /metrics [default: 127.0.0.1:8080].
    #[arg(long, env = "FRESHET_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// A directory local files may be read from and written to (repeatable). Replaces the
    /// default roots: the data directory and the directory the server was started in.
    #[arg(
        long = "allow-path",
        env = "FRESHET_ALLOW_PATHS",
        value_delimiter = ','
    )]
    pub allow_paths: Vec<PathBuf>,
    /// SQL file run at start-up, statement by statement.
    #[arg(long, env = "FRESHET_INIT_SQL")]
    pub init_sql: Option<PathBuf>,
    /// Maximum simultaneous connections, for pgwire and for Flight SQL each [default: 256].
    #[arg(long, env = "FRESHET_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// How often continuous queries checkpoint, e.g. `10s` [default: 10s].
    #[arg(long, env = "FRESHET_CHECKPOINT_INTERVAL")]
    pub checkpoint_interval: Option<String>,
    /// How long a silent source partition may hold the watermark back, e.g. `30s`
    /// [default: 30s].
    #[arg(long, env = "FRESHET_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Largest PostgreSQL wire message accepted, in bytes [default: 67108864 (64 MiB)].
    #[arg(long, env = "FRESHET_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Longest statement text accepted, in bytes [default: 4194304 (4 MiB)].
    #[arg(long, env = "FRESHET_MAX_STATEMENT_BYTES")]
    pub max_statement_bytes: Option<usize>,
    /// Most operators one expression may chain [default: 1000].
    #[arg(long, env = "FRESHET_MAX_EXPRESSION_DEPTH")]
    pub max_expression_depth: Option<usize>,
    /// How long a connection may take to finish start-up and authentication, e.g. `60s`
    /// [default: 60s].
    #[arg(long, env = "FRESHET_AUTHENTICATION_TIMEOUT")]
    pub authentication_timeout: Option<String>,
    /// How long the answer to a first failed login from an address is delayed; it doubles with
    /// each further failure from that address within a minute, up to 32 times. `0` turns it
    /// off [default: 500ms].
    #[arg(long, env = "FRESHET_AUTH_FAILURE_DELAY")]
    pub auth_failure_delay: Option<String>,
    /// A pgwire session idle this long (waiting for a query, outside a transaction) is closed
    /// with FATAL 57P05, as PostgreSQL's `idle_session_timeout`; `0` never [default: 0].
    #[arg(long, env = "FRESHET_IDLE_SESSION_TIMEOUT")]
    pub idle_session_timeout: Option<String>,
    /// PEM certificate (chain) for TLS on pgwire, Flight and HTTP; needs --tls-key-file.
    #[arg(long, env = "FRESHET_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "FRESHET_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Refuse unencrypted connections on every frontend [default: false: TLS is offered and
    /// plain connections are still accepted].
    #[arg(long, env = "FRESHET_TLS_REQUIRE", num_args = 0..=1, default_missing_value = "true")]
    pub tls_require: Option<bool>,
}

/// The config file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    pg_addr: Option<SocketAddr>,
    flight_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    allowed_roots: Option<Vec<PathBuf>>,
    init_sql: Option<PathBuf>,
    max_connections: Option<usize>,
    checkpoint_interval: Option<String>,
    idle_timeout: Option<String>,
    max_message_bytes: Option<usize>,
    max_statement_bytes: Option<usize>,
    max_expression_depth: Option<usize>,
    authentication_timeout: Option<String>,
    auth_failure_delay: Option<String>,
    idle_session_timeout: Option<String>,
    #[serde(default)]
    auth: AuthConfig,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default)]
    tls: FileTls,
}

/// `[tls]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    require: Option<bool>,
}

/// Where the TLS certificate and key are, and whether plain connections are refused.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Refuse unencrypted connections (pgwire: FATAL 28000; HTTP: 400; Flight: closed).
    pub require: bool,
}

/// `[http]` in the config file: the HTTP API's limits and CORS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Request bodies larger than this are refused with 413 (event ingest).
    pub max_body_bytes: usize,
    /// Origins (`https://shop.example`) whose pages may call the HTTP API from scripts;
    /// `"*"` allows any. Empty: no CORS headers, so browsers refuse cross-origin calls.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 << 20,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// `[auth]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `[[auth.users]]` entries. No users means no authentication.
    #[serde(default)]
    pub users: Vec<User>,
}

/// One user allowed to connect.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The settings the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub pg_addr: SocketAddr,
    pub flight_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub allowed_roots: Vec<PathBuf>,
    pub init_sql: Option<PathBuf>,
    pub max_connections: usize,
    /// Largest PostgreSQL wire message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Limits on one statement (text length, expression depth).
    pub statement_limits: StatementLimits,
    /// How long a connection may take to finish start-up and authentication.
    pub authentication_timeout: Duration,
    /// The delay of the answer to a first failed login from an address (zero: none).
    pub auth_failure_delay: Duration,
    /// How long a pgwire session may sit idle (zero: forever).
    pub idle_session_timeout: Duration,
    /// Defaults of continuous queries.
    pub streams: StreamDefaults,
    pub auth: AuthConfig,
    /// The HTTP API's limits and CORS.
    pub http: HttpConfig,
    /// TLS for all three frontends; `None`: clear text only.
    pub tls: Option<TlsSettings>,
    /// Where the server was started; relative paths in SQL resolve here.
    pub base_dir: PathBuf,
}

fn stream_defaults(
    checkpoint_interval: Option<String>,
    idle_timeout: Option<String>,
) -> Result<StreamDefaults> {
    let mut defaults = StreamDefaults::default();
    if let Some(text) = checkpoint_interval {
        defaults.checkpoint_interval = parse_duration("checkpoint_interval", &text)
            .map_err(|e| anyhow::anyhow!(e.message().to_string()))?;
    }
    if let Some(text) = idle_timeout {
        defaults.idle_timeout = parse_duration("idle_timeout", &text)
            .map_err(|e| anyhow::anyhow!(e.message().to_string()))?;
    }
    Ok(defaults)
}

/// The default largest wire message: far below PostgreSQL's 1 GB, so 256 connections cannot
/// make the server buffer more than a few GB between them.
const MESSAGE_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
/// The smallest `max_message_bytes` allowed.
const MESSAGE_BYTES_MIN: usize = 16 * 1024;

fn addr(text: &str) -> SocketAddr {
    // Only called on the constants below, which are valid addresses.
    text.parse().expect("built-in address")
}

/// A duration setting where `0` (off) is allowed.
fn optional_duration(name: &str, text: Option<String>, default: Duration) -> Result<Duration> {
    match text {
        None => Ok(default),
        // `0`, `0s`, `0 ms`: off (parse_duration accepts positive durations only).
        Some(text)
            if text
                .trim()
                .split(|c: char| c.is_ascii_alphabetic() || c.is_whitespace())
                .next()
                .and_then(|n| n.parse::<f64>().ok())
                == Some(0.0) =>
        {
            Ok(Duration::ZERO)
        }
        Some(text) => {
            parse_duration(name, &text).map_err(|e| anyhow::anyhow!(e.message().to_string()))
        }
    }
}

/// The TLS settings from flags and the `[tls]` table: a certificate needs its key, and
/// requiring TLS needs both.
fn tls_settings(
    args: &ServeArgs,
    file: FileTls,
    absolute: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<Option<TlsSettings>> {
    let cert_file = args.tls_cert_file.clone().or(file.cert_file);
    let key_file = args.tls_key_file.clone().or(file.key_file);
    let require = args.tls_require.or(file.require).unwrap_or(false);
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Ok(Some(TlsSettings {
            cert_file: absolute(cert_file),
            key_file: absolute(key_file),
            require,
        })),
        (Some(_), None) => bail!("[tls] cert_file (--tls-cert-file) is set but key_file (--tls-key-file) is not: TLS needs both"),
        (None, Some(_)) => bail!("[tls] key_file (--tls-key-file) is set but cert_file (--tls-cert-file) is not: TLS needs both"),
        (None, None) if require => bail!("[tls] require (--tls-require) needs a certificate: set cert_file and key_file (`freshet gen-cert` makes a pair for development)"),
        (None, None) => Ok(None),
    }
}

impl Config {
    /// Merges flags (which clap already merged with the environment), the config file and
    /// the defaults.
    pub fn load(args: &ServeArgs) -> Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("could not read config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let base_dir = std::env::current_dir().context("could not read the current directory")?;
        let absolute = |p: PathBuf| if p.is_absolute() { p } else { base_dir.join(p) };
        let allowed_roots = if args.allow_paths.is_empty() {
            file.allowed_roots.unwrap_or_default()
        } else {
            args.allow_paths.clone()
        };
        let config = Config {
            data_dir: absolute(
                args.data_dir
                    .clone()
                    .or(file.data_dir)
                    .unwrap_or_else(|| PathBuf::from("freshet-data")),
            ),
            pg_addr: args
                .pg_addr
                .or(file.pg_addr)
                .unwrap_or_else(|| addr("127.0.0.1:5433")),
            flight_addr: args
                .flight_addr
                .or(file.flight_addr)
                .unwrap_or_else(|| addr("127.0.0.1:50051")),
            http_addr: args
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| addr("127.0.0.1:8080")),
            allowed_roots: allowed_roots.into_iter().map(absolute).collect(),
            init_sql: args.init_sql.clone().or(file.init_sql),
            max_connections: args.max_connections.or(file.max_connections).unwrap_or(256),
            max_message_bytes: args
                .max_message_bytes
                .or(file.max_message_bytes)
                .unwrap_or(MESSAGE_BYTES_DEFAULT),
            statement_limits: {
                let defaults = StatementLimits::default();
                StatementLimits {
                    text_bytes_max: args
                        .max_statement_bytes
                        .or(file.max_statement_bytes)
                        .unwrap_or(defaults.text_bytes_max),
                    expression_depth_max: args
                        .max_expression_depth
                        .or(file.max_expression_depth)
                        .unwrap_or(defaults.expression_depth_max),
                }
            },
            authentication_timeout: match args
                .authentication_timeout
                .clone()
                .or(file.authentication_timeout)
            {
                Some(text) => parse_duration("authentication_timeout", &text)
                    .map_err(|e| anyhow::anyhow!(e.message().to_string()))?,
                None => Duration::from_secs(60),
            },
            auth_failure_delay: optional_duration(
                "auth_failure_delay",
                args.auth_failure_delay.clone().or(file.auth_failure_delay),
                Duration::from_millis(500),
            )?,
            idle_session_timeout: optional_duration(
                "idle_session_timeout",
                args.idle_session_timeout
                    .clone()
                    .or(file.idle_session_timeout),
                Duration::ZERO,
            )?,
            streams: stream_defaults(
                args.checkpoint_interval
                    .clone()
                    .or(file.checkpoint_interval),
                args.idle_timeout.clone().or(file.idle_timeout),
            )?,
            auth: file.auth,
            http: file.http,
            tls: tls_settings(args, file.tls, &absolute)?,
            base_dir,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        // A start-up packet or a small query must always fit.
        if self.max_message_bytes < MESSAGE_BYTES_MIN {
            bail!("max_message_bytes must be at least {MESSAGE_BYTES_MIN}");
        }
        if self.statement_limits.text_bytes_max == 0 {
            bail!("max_statement_bytes must be at least 1");
        }
        if self.statement_limits.expression_depth_max == 0 {
            bail!("max_expression_depth must be at least 1");
        }
        if self.authentication_timeout.is_zero() {
            bail!("authentication_timeout must be more than 0");
        }
        if self.http.max_body_bytes == 0 {
            bail!("[http] max_body_bytes must be at least 1");
        }
        for origin in &self.http.cors_allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                bail!("[http] cors_allowed_origins: '{origin}' is not an origin such as https://shop.example (or \"*\")");
            }
        }
        for user in &self.auth.users {
            if user.name.is_empty() || user.password.is_empty() {
                bail!("every [[auth.users]] entry needs a non-empty name and password");
            }
        }
        Ok(())
    }

    /// Whether clients must authenticate.
    pub fn auth_enabled(&self) -> bool {
        !self.auth.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("freshet.toml");
        std::fs::write(
            &path,
            "pg_addr = \"127.0.0.1:6000\"\nhttp_addr = \"127.0.0.1:6001\"\n[[auth.users]]\nname = \"a\"\npassword = \"b\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            pg_addr: Some(addr("127.0.0.1:7000")),
            ..ServeArgs::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.pg_addr, addr("127.0.0.1:7000"));
        assert_eq!(config.http_addr, addr("127.0.0.1:6001"));
        assert_eq!(config.flight_addr, addr("127.0.0.1:50051"));
        assert!(config.auth_enabled());
        assert!(config.data_dir.is_absolute());
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("freshet.toml");
        std::fs::write(&path, "pg_adr = \"127.0.0.1:6000\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let err = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(err.contains("pg_adr"), "{err}");
    }

    #[test]
    fn tls_needs_a_certificate_and_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("freshet.toml");
        let load = |text: &str, args: ServeArgs| {
            std::fs::write(&path, text).unwrap();
            Config::load(&ServeArgs {
                config: Some(path.clone()),
                ..args
            })
        };
        let config = load(
            "[tls]\ncert_file = \"server.crt\"\nkey_file = \"/etc/server.key\"\n",
            ServeArgs::default(),
        )
        .unwrap();
        let tls = config.tls.unwrap();
        assert!(tls.cert_file.is_absolute() && tls.cert_file.ends_with("server.crt"));
        assert_eq!(tls.key_file, PathBuf::from("/etc/server.key"));
        assert!(!tls.require);
        // The flag wins over the file.
        let config = load(
            "[tls]\ncert_file = \"a.crt\"\nkey_file = \"a.key\"\nrequire = false\n",
            ServeArgs {
                tls_require: Some(true),
                ..ServeArgs::default()
            },
        )
        .unwrap();
        assert!(config.tls.unwrap().require);
        let err = format!(
            "{:#}",
            load("[tls]\ncert_file = \"a.crt\"\n", ServeArgs::default()).unwrap_err()
        );
        assert!(err.contains("key_file"), "{err}");
        let err = format!(
            "{:#}",
            load("[tls]\nrequire = true\n", ServeArgs::default()).unwrap_err()
        );
        assert!(err.contains("needs a certificate"), "{err}");
        assert!(load("", ServeArgs::default()).unwrap().tls.is_none());
    }

    #[test]
    fn login_delay_and_idle_session_timeout_take_zero_for_off() {
        let config = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(config.auth_failure_delay, Duration::from_millis(500));
        assert_eq!(config.idle_session_timeout, Duration::ZERO);
        let config = Config::load(&ServeArgs {
            auth_failure_delay: Some("0s".into()),
            idle_session_timeout: Some("2min".into()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(config.auth_failure_delay, Duration::ZERO);
        assert_eq!(config.idle_session_timeout, Duration::from_secs(120));
        let err = Config::load(&ServeArgs {
            idle_session_timeout: Some("soon".into()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("idle_session_timeout"),
            "{err:#}"
        );
    }
}
