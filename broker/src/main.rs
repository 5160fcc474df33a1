//! `switchboard-broker`: loads the settings, starts the broker, reloads on SIGHUP, and shuts it down
//! on SIGINT/SIGTERM, telling systemd each step.

mod args;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use switchboard_broker::auth::{self, hash_token, Auth, CredentialsEdit, CredentialsFile};
use switchboard_broker::notify;
use switchboard_broker::reload::{logging::LogControl, signals::Signals};
use switchboard_broker::settings::{Overrides, Settings};
use switchboard_broker::Broker;
use switchboard_proto::ClientId;

use crate::args::{Args, Command, Passwd, RuleFlags};

mod store_check;

mod admin_cli;

// Entries are allocated on session threads and freed on the Router and store threads; with glibc's
// allocator that cross-thread freeing (and its consolidation of large batches) was a sixth of the
// broker's CPU in relay. mimalloc measured +19 % relay throughput and a lower latency p50 for +50
// bytes per idle connection (BENCHMARKS.md). The library leaves the choice to whoever embeds it.
// Built without transparent huge pages (`no_thp`): mimalloc's `madvise(MADV_HUGEPAGE)` on its arenas
// made the kernel back them with 2 MiB pages, so 1,000 stalled 1 MiB uploads cost 293 MiB of RSS
// against the 256 MiB partial-frame budget and an idle broker 47 MB; without it 256 MiB and 16 MB,
// and relay throughput the same within noise (tests/scripts/stalled_uploads.py, issue 12).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Some(Command::Store { action }) => {
            return store_check::dispatch(action, args.config, args.data_dir)
        }
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
    let overrides = Overrides {
        config_file: args.config,
        listen: args.listen,
        data_dir: args.data_dir,
        accept_store_loss: args.accept_store_loss,
    };
    let settings = Settings::load(&overrides)?;
    let log = LogControl::init(&settings)?;
    actix_rt::System::new().block_on(async move {
        let signals = Signals::watch()?;
        let broker = Broker::start(settings).await?;
        notify::ready();
        notify::start_watchdog(broker.probe());
        signals.until_stopped(&broker, &overrides, &log).await;
        notify::stopping();
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
