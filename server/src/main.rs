//! The `freshet` binary: `freshet serve` runs the server, `freshet demo` runs it with a
//! generated dataset already registered.

mod config;
mod demo;
mod flight;
mod http;
mod metrics;
mod pg;
mod pg_encode;
mod pg_stream;
mod server;
mod throttle;
mod tls;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, ServeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "freshet",
    version,
    about = "Freshet: a real-time analytics SQL server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Run the server with a small generated dataset already registered.
    Demo(ServeArgs),
    /// Write a development CA and a server certificate signed by it (for `[tls]`); clients
    /// verify the server with ca.crt. For production, use certificates from your own CA.
    GenCert(tls::GenCertArgs),
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Panics are bugs, but one reachable from a client must cost that client's connection only
/// (see `server::accept_pg`) and one line in the log, not a backtrace per message: the hook
/// logs the message and where it happened; `RUST_BACKTRACE=1` adds the backtrace.
fn init_panic_logging() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        tracing::error!(%location, thread, "internal error (panic): {message}");
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
}

/// Stack of each runtime worker thread (virtual memory: only what is used is resident).
const WORKER_STACK_BYTES: usize = 16 * 1024 * 1024;

fn gen_cert(args: &tls::GenCertArgs) -> ExitCode {
    match tls::gen_cert(args) {
        Ok(files) => {
            println!(
                "wrote {ca}, {cert} and {key} (and the CA's key ca.key, which signs; keep it or delete it)\n\
                 server: [tls] cert_file = \"{cert}\", key_file = \"{key}\"\n\
                 clients: verify with {ca}, e.g. psql \"host=localhost sslmode=verify-full sslrootcert={ca}\"",
                ca = files.ca_cert.display(),
                cert = files.cert.display(),
                key = files.key.display(),
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("freshet: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    init_panic_logging();
    let (args, demo) = match cli.command {
        Command::GenCert(args) => return gen_cert(&args),
        Command::Serve(args) => (args, false),
        Command::Demo(mut args) => {
            if args.data_dir.is_none() {
                args.data_dir = Some("freshet-demo".into());
            }
            (args, true)
        }
    };
    let result = Config::load(&args).and_then(|config| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            // Planning walks expression trees recursively; deep (but allowed) expressions need
            // more than tokio's 2 MiB default. The limit itself is max_expression_depth.
            .thread_stack_size(WORKER_STACK_BYTES)
            .build()?
            .block_on(server::run(config, demo))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("freshet: {err:#}");
            ExitCode::FAILURE
        }
    }
}
