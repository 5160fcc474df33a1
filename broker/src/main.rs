//! `switchboard-broker`: loads the settings, starts the broker, and shuts it down on SIGINT/SIGTERM.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchboard_broker::auth::{hash_token, CredentialsFile};
use switchboard_broker::settings::{LogFormat, Overrides, Settings};
use switchboard_broker::Broker;
use switchboard_proto::ClientId;
use tracing_subscriber::EnvFilter;

// Entries are allocated on session threads and freed on the Router and store threads; with glibc's
// allocator that cross-thread freeing (and its consolidation of large batches) was a sixth of the
// broker's CPU in relay. mimalloc measured +19 % relay throughput and a lower latency p50 for +50
// bytes per idle connection (BENCHMARKS.md). The library leaves the choice to whoever embeds it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs the Switchboard message broker.
#[derive(Debug, Parser)]
#[command(name = "switchboard-broker", version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the credentials file (client ids and their token hashes).
    Passwd {
        #[command(subcommand)]
        action: Passwd,
    },
}

#[derive(Debug, Subcommand)]
enum Passwd {
    /// Adds a client id, or replaces its token. The token is read from stdin (first line), or
    /// prompted for when stdin is a terminal; never pass it as an argument.
    Add {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        id: String,
    },
    /// Removes a client id.
    Remove {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        id: String,
    },
    /// Lists the client ids and their rules (never the hashes).
    List {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Some(Command::Passwd { action }) => passwd(action),
        None => run(args),
    };
    match result {
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

fn passwd(action: Passwd) -> anyhow::Result<()> {
    match action {
        Passwd::Add { file, id } => {
            ClientId::new(id.as_str())
                .with_context(|| format!("`{id}` is not a valid client id"))?;
            let token = read_token(&id)?;
            let mut credentials = CredentialsFile::load(&file)?;
            let hash = hash_token(&token)?;
            let existed = credentials.clients.contains_key(&id);
            credentials.clients.entry(id.clone()).or_default().hash = hash;
            credentials.save(&file)?;
            let verb = if existed { "updated" } else { "added" };
            println!("{verb} {id} in {}", file.display());
        }
        Passwd::Remove { file, id } => {
            let mut credentials = load_existing(&file)?;
            if credentials.clients.remove(&id).is_none() {
                anyhow::bail!("{id} is not in {}", file.display());
            }
            credentials.save(&file)?;
            println!("removed {id} from {}", file.display());
        }
        Passwd::List { file } => {
            for (id, entry) in load_existing(&file)?.clients {
                let mut line = id;
                if !entry.networks.is_empty() {
                    line.push_str(&format!(" networks={}", entry.networks.join(",")));
                }
                if let Some(to) = entry.may_send_to {
                    line.push_str(&format!(" may_send_to={}", to.join(",")));
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// The credentials file at `file`, which must exist: only `passwd add` creates one, so a typo in
/// `--file` is an error, not an empty list.
fn load_existing(file: &std::path::Path) -> anyhow::Result<CredentialsFile> {
    if !file
        .try_exists()
        .with_context(|| format!("cannot read {}", file.display()))?
    {
        anyhow::bail!("{} does not exist (passwd add creates it)", file.display());
    }
    Ok(CredentialsFile::load(file)?)
}

/// The token for `id`: prompted twice on a terminal, else the first line of stdin.
fn read_token(id: &str) -> anyhow::Result<String> {
    let token = if std::io::stdin().is_terminal() {
        let token = rpassword::prompt_password(format!("token for {id}: "))?;
        if rpassword::prompt_password("again: ")? != token {
            anyhow::bail!("the two tokens differ");
        }
        token
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if token.is_empty() {
        anyhow::bail!("the token is empty");
    }
    Ok(token)
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
