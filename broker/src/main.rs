//! `switchboard-broker`: loads the settings, starts the broker, and shuts it down on SIGINT/SIGTERM.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use switchboard_broker::settings::{LogFormat, Overrides, Settings};
use switchboard_broker::Broker;
use tracing_subscriber::EnvFilter;

/// Runs the Switchboard message broker.
#[derive(Debug, Parser)]
#[command(name = "switchboard-broker", version, about)]
struct Args {
    /// Settings file (default: ./settings.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (ip:port), overriding the settings.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory of the SQLite store, overriding the settings.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let settings = Settings::load(&Overrides {
        config_file: args.config,
        listen: args.listen,
        data_dir: args.data_dir,
    })?;
    init_logging(&settings)?;
    actix_rt::System::new().block_on(async move {
        let broker = Broker::start(settings).await?;
        wait_for_signal().await?;
        broker.shutdown().await;
        Ok(())
    })
}

fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => EnvFilter::try_new(&settings.log.level)
            .with_context(|| format!("invalid setting `log.level`: `{}`", settings.log.level))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
