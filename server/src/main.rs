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
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let (args, demo) = match cli.command {
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
