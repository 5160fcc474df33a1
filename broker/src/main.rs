//! `switchboard-broker`: loads the settings, starts the broker, and shuts it down on SIGINT/SIGTERM.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchboard_broker::auth::{self, hash_token, Auth, CredentialsEdit, CredentialsFile};
use switchboard_broker::settings::{LogFormat, Overrides, Settings};
use switchboard_broker::Broker;
use switchboard_proto::ClientId;
use tracing_subscriber::EnvFilter;

mod admin_cli;

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
    /// Data directory of the store, overriding the settings.
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
    /// Ask a running broker over its admin API: status, clients, mailboxes; remove, purge, kick.
    Admin(admin_cli::AdminArgs),
}

#[derive(Debug, Subcommand)]
enum Passwd {
    /// Adds a client id, or replaces its token. The token is read from stdin (first line), or
    /// prompted for when stdin is a terminal, or generated; never pass it as an argument. Rules
    /// given here replace that kind of rule; rules not given stay as they were.
    Add {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        id: String,
        /// Generate a random token (256 bits) and print it on stdout, the only thing printed there.
        #[arg(long)]
        generate_token: bool,
        #[command(flatten)]
        rules: RuleFlags,
    },
    /// Changes a client's rules, keeping its token.
    Set {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        id: String,
        #[command(flatten)]
        rules: RuleFlags,
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

/// A client's rules as `passwd` flags; each kind left out stays as it was.
#[derive(Debug, clap::Args)]
struct RuleFlags {
    /// A network (CIDR or address) the client may connect from; repeat for several.
    #[arg(long = "network", value_name = "CIDR", conflicts_with = "any_network")]
    networks: Vec<String>,
    /// The client may connect from anywhere (removes its networks).
    #[arg(long)]
    any_network: bool,
    /// A client id (glob) the client may send to; repeat for several.
    #[arg(long = "may-send-to", value_name = "GLOB", conflicts_with = "anyone")]
    may_send_to: Vec<String>,
    /// The client may send to anyone (removes its may_send_to).
    #[arg(long)]
    anyone: bool,
}

impl RuleFlags {
    fn is_empty(&self) -> bool {
        self.networks.is_empty() && !self.any_network && self.may_send_to.is_empty() && !self.anyone
    }

    /// Writes the kinds of rule that were given into `id`'s entry.
    fn apply(&self, edit: &mut CredentialsEdit, id: &str) -> anyhow::Result<()> {
        if !self.networks.is_empty() || self.any_network {
            edit.set_networks(id, &self.networks)?;
        }
        if !self.may_send_to.is_empty() {
            edit.set_may_send_to(id, Some(&self.may_send_to))?;
        } else if self.anyone {
            edit.set_may_send_to(id, None)?;
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Some(Command::Passwd { action }) => passwd(action),
        Some(Command::Admin(admin)) => return admin_cli::main(admin),
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
        Passwd::Add {
            file,
            id,
            generate_token,
            rules,
        } => {
            ClientId::new(id.as_str())
                .with_context(|| format!("`{id}` is not a valid client id"))?;
            let mut edit = CredentialsEdit::open(&file, true)?;
            let token = if generate_token {
                auth::generate_token()
            } else {
                read_token(&id)?
            };
            let existed = edit.contains(&id);
            edit.set_hash(&id, &hash_token(&token)?)?;
            rules.apply(&mut edit, &id)?;
            edit.save()?;
            let verb = if existed { "updated" } else { "added" };
            if generate_token {
                // The token alone on stdout, so `TOKEN=$(... --generate-token)` captures it.
                println!("{token}");
                eprintln!("{verb} {id} in {}", file.display());
            } else {
                println!("{verb} {id} in {}", file.display());
            }
        }
        Passwd::Set { file, id, rules } => {
            if rules.is_empty() {
                anyhow::bail!(
                    "nothing to set: give --network, --any-network, --may-send-to or --anyone"
                );
            }
            let mut edit = CredentialsEdit::open(&file, false)?;
            if !edit.contains(&id) {
                anyhow::bail!("{id} is not in {} (passwd add adds it)", file.display());
            }
            rules.apply(&mut edit, &id)?;
            edit.save()?;
            println!("updated {id} in {}", file.display());
        }
        Passwd::Remove { file, id } => {
            let mut edit = CredentialsEdit::open(&file, false)?;
            if !edit.remove(&id) {
                anyhow::bail!("{id} is not in {}", file.display());
            }
            edit.save()?;
            println!("removed {id} from {}", file.display());
        }
        Passwd::List { file } => {
            // Loaded as the broker loads it: a file the broker would refuse is refused here too.
            let credentials = CredentialsFile::load_existing(&file)?;
            Auth::from_credentials(&file, credentials.clone())?;
            for (id, entry) in credentials.clients {
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
