//! The `switchboard-broker` command line: its arguments and subcommands, as clap definitions.
//!
//! Only definitions live here, no behaviour, so that the packaging's generator
//! (`packaging/gen`) can include this file to write the man pages and shell completions from the
//! same source as `--help`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Runs the Switchboard message broker.
#[derive(Debug, Parser)]
#[command(name = "switchboard-broker", version, about)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// Settings file (default: ./settings.toml if present).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on (ip:port), overriding the settings.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
    /// Data directory of the store, overriding the settings.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Start even if the store was emptied, replaced or lost its newest commits since this broker
    /// last used it (logged as an error); without it such a store is refused. For one start.
    #[arg(long)]
    pub(crate) accept_store_loss: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage the credentials file (client ids and their token hashes).
    Passwd {
        #[command(subcommand)]
        action: Passwd,
    },
    /// Inspect the store on disk (the broker must not be running on it).
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Ask a running broker over its admin API: status, clients, mailboxes; remove, purge, kick.
    Admin(AdminArgs),
}

/// `switchboard-broker store ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum StoreAction {
    /// Verifies every frame of the log store and says what is damaged. Exit codes: 0 whole, 1
    /// damaged, 2 could not check (a broker is running on it, or it cannot be read).
    Check,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Passwd {
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
pub(crate) struct RuleFlags {
    /// A network (CIDR or address) the client may connect from; repeat for several.
    #[arg(long = "network", value_name = "CIDR", conflicts_with = "any_network")]
    pub(crate) networks: Vec<String>,
    /// The client may connect from anywhere (removes its networks).
    #[arg(long)]
    pub(crate) any_network: bool,
    /// A client id (glob) the client may send to; repeat for several.
    #[arg(long = "may-send-to", value_name = "GLOB", conflicts_with = "anyone")]
    pub(crate) may_send_to: Vec<String>,
    /// The client may send to anyone (removes its may_send_to).
    #[arg(long)]
    pub(crate) anyone: bool,
}

/// Talks to a running broker's admin API.
#[derive(Debug, clap::Args)]
pub(crate) struct AdminArgs {
    /// The admin listener (`admin.listen` of the broker): host:port, or https://host:port when it
    /// serves TLS.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:7879",
        env = "SWITCHBOARD_ADMIN"
    )]
    pub(crate) admin: String,
    /// With https: trust only the certificate authorities in this PEM file (else the system's).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_ADMIN_CA")]
    pub(crate) ca: Option<std::path::PathBuf>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AdminCommand {
    /// The broker at a glance: version, uptime, rates, connections, mailboxes, limits.
    Status,
    /// The connected clients: address, since when, window in use, bytes in and out.
    Clients,
    /// The non-empty mailboxes, deepest first.
    Mailboxes {
        /// How many to list.
        #[arg(long, value_name = "N", default_value_t = 20)]
        top: usize,
        /// Order: depth (most entries), bytes, or id.
        #[arg(long, default_value = "depth", value_parser = ["depth", "bytes", "id"])]
        sort: String,
    },
    /// One mailbox: its counts and its first entries (metadata, body size).
    Mailbox {
        id: String,
        /// Entries to list.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// List entries with an id above this.
        #[arg(long, value_name = "ENTRY", default_value_t = 0)]
        after: u64,
        /// Show the first N body bytes of each entry (base64).
        #[arg(long, value_name = "N", default_value_t = 0)]
        peek: usize,
    },
    /// Removes one entry of a mailbox; a message's sender gets a `removed` receipt.
    Remove { id: String, message_id: u64 },
    /// Removes every entry of a mailbox that is not handed out; senders get `removed` receipts.
    Purge { id: String },
    /// Disconnects a client (it gets the error code `kicked`).
    Kick { id: String },
}
