//! A real `freshet` server process for end-to-end tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The repository's `tests/` folder (slt files, fixtures). Cargo sets `CARGO_MANIFEST_DIR` when
/// it runs the tests too; that one wins over the compile-time path, which a build directory
/// shared between checkouts can carry from another checkout.
pub fn tests_dir() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.join("..").join("tests")
}

/// Copies `tests/data` into `dir`, so a server started in `dir` may read it.
pub fn copy_fixtures(dir: &Path) {
    copy_dir(&tests_dir().join("data"), &dir.join("data"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The `freshet` binary: the one cargo built, or $FRESHET_BIN (as for the Python suites), e.g.
/// when several worktrees share one target directory.
pub fn freshet_binary() -> std::ffi::OsString {
    std::env::var_os("FRESHET_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_freshet").into())
}

/// How to start a server.
#[derive(Clone, Default)]
pub struct Options {
    /// `serve` (default) or `demo`.
    pub subcommand: Option<&'static str>,
    /// TOML written to a config file passed with --config.
    pub config: Option<String>,
    pub extra_args: Vec<String>,
}

/// A running server; killed when dropped.
pub struct TestServer {
    child: Child,
    pub pg_addr: SocketAddr,
    pub flight_addr: SocketAddr,
    pub http_addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

fn address_in(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

impl TestServer {
    /// Starts `freshet` with its working directory `work_dir` and data in `work_dir/data-dir`,
    /// on free ports, and waits until it listens.
    pub fn start(work_dir: &Path, options: &Options) -> Self {
        let data_dir = work_dir.join("data-dir");
        let mut command = Command::new(freshet_binary());
        command
            .arg(options.subcommand.unwrap_or("serve"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--pg-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--flight-addr",
                "127.0.0.1:0",
            ])
            .args(&options.extra_args)
            .current_dir(work_dir)
            .env("RUST_LOG", "info")
            .env_remove("FRESHET_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(config) = &options.config {
            let path = work_dir.join("freshet.toml");
            std::fs::write(&path, config).unwrap();
            command.arg("--config").arg(path);
        }
        let mut child = command.spawn().expect("start freshet");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (sender, receiver) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut pg = None;
            let mut flight = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = address_in(&line, "pgwire listening on ") {
                    pg = Some(addr);
                }
                if let Some(addr) = address_in(&line, "flight listening on ") {
                    flight = Some(addr);
                }
                // The server logs its HTTP address last, once every listener is bound.
                if let (Some(pg), Some(flight), Some(http)) =
                    (pg, flight, address_in(&line, "http listening on "))
                {
                    let _ = sender.send((pg, flight, http));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let started = receiver.recv_timeout(Duration::from_secs(120));
        let Ok((pg_addr, flight_addr, http_addr)) = started else {
            let _ = child.kill();
            panic!(
                "freshet did not start listening; its log:\n{}",
                logs.lock().unwrap().join("\n")
            );
        };
        Self {
            child,
            pg_addr,
            flight_addr,
            http_addr,
            logs,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server process's peak resident memory so far (Linux `VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status of the server");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("VmHWM in /proc status");
        kib * 1024
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The server's log so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// A connection string for `user` (and `password`).
    pub fn conn_string(&self, user: &str, password: Option<&str>) -> String {
        let mut text = format!(
            "host={} port={} user={user} dbname=freshet",
            self.pg_addr.ip(),
            self.pg_addr.port()
        );
        if let Some(password) = password {
            text.push_str(&format!(" password={password}"));
        }
        text
    }

    /// Connects with tokio-postgres.
    pub async fn connect_as(
        &self,
        user: &str,
        password: Option<&str>,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.conn_string(user, password), tokio_postgres::NoTls)
                .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Connects with tokio-postgres as user `test`.
    pub async fn client(&self) -> tokio_postgres::Client {
        self.connect_as("test", None)
            .await
            .expect("connect to freshet")
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server with SIGTERM and waits for it, as an operator would.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The message of a database error (tokio-postgres shows only "db error").
pub fn error_message(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_else(|| err.to_string())
}

/// The SQLSTATE of an error, or a text saying there was none.
pub fn sqlstate(err: &tokio_postgres::Error) -> String {
    err.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {err}"))
}

/// A small deterministic random generator for kill times (seed printed for reruns).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}
