//! The `sbcd` command line.
//!
//! - `sbcd [--config FILE] [--set key=value]...` runs the daemon (embedded default config
//!   without `--config`).
//! - `sbcd check-config FILE` validates a file like `kamailio -c`: every error on its own line
//!   as `file:line:column: path: message`, exit status 2 when invalid.
//! - `sbcd print-config [FILE]` prints the effective configuration (defaults applied,
//!   substitutions done, secrets redacted).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis_config::{Config, ConfigErrors, LogFormat};

/// Exit status for an invalid configuration.
pub const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "sbcd", version, about = "Portcullis session border controller")]
pub struct Cli {
    /// Configuration file (YAML). Without it the embedded default configuration is used.
    #[arg(long, short = 'c', global = true)]
    pub config: Option<PathBuf>,
    /// Override a configuration value, e.g. `--set sip.timers.t1_ms=250`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    pub overrides: Vec<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate a configuration file and report every error (exit status 2 when invalid).
    CheckConfig {
        /// The file to check (defaults to --config).
        file: Option<PathBuf>,
    },
    /// Print the effective configuration with secrets redacted.
    PrintConfig {
        /// The file to print (defaults to --config, or the embedded default).
        file: Option<PathBuf>,
    },
}

fn load(path: Option<&std::path::Path>, overrides: &[String]) -> Result<Config, ConfigErrors> {
    portcullis_config::load_file_with_overrides(path, overrides)
}

/// Runs the command line; returns the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => {
            let Some(path) = file.or(cli.config) else {
                eprintln!("sbcd check-config: no file given (sbcd check-config FILE)");
                return ExitCode::from(EXIT_CONFIG);
            };
            match load(Some(&path), &cli.overrides) {
                Ok(_) => {
                    println!("{}: configuration is valid", path.display());
                    ExitCode::SUCCESS
                }
                Err(errs) => {
                    eprintln!("{errs}");
                    eprintln!("{}: {} error(s)", path.display(), errs.errors.len());
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Some(Command::PrintConfig { file }) => {
            let path = file.or(cli.config);
            match load(path.as_deref(), &cli.overrides) {
                Ok(cfg) => {
                    print!("{}", portcullis_config::render_effective(&cfg));
                    ExitCode::SUCCESS
                }
                Err(errs) => {
                    eprintln!("{errs}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Some(Command::Run) | None => {
            let cfg = match load(cli.config.as_deref(), &cli.overrides) {
                Ok(c) => c,
                Err(errs) => {
                    eprintln!("{errs}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            run(cfg)
        }
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG, when set, refines the configured level.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cfg.logging.level.as_str()));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match cfg.logging.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(cfg: Config) -> ExitCode {
    init_logging(&cfg);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.sip.workers > 0 {
        rt.worker_threads(cfg.sip.workers);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sbcd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "sbcd starting");
    let result = rt.block_on(crate::server::run(cfg, shutdown_signal()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "sbcd cannot start");
            eprintln!("sbcd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
