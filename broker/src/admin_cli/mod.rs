//! `switchboard-broker admin ...`: the operator's command line over the admin JSON API. A thin
//! client: each command is one request (`http.rs`), shown as a table (`table.rs`) or, with
//! `--json`, as the API's JSON. Exit codes tell a script what went wrong.
//!
//! | exit | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | the API refused (400, 409, 503) or answered nonsense |
//! | 2 | `--admin` or `--ca` cannot be used |
//! | 3 | the admin listener cannot be reached, its TLS certificate is not trusted, or it did not answer in time |
//! | 4 | unauthorized (401): no token, or the wrong one |
//! | 5 | not found (404): no such client, entry |
//! | 6 | forbidden (403): the read-only token asked for a body or an action |

mod http;
mod table;
mod target;

use std::process::ExitCode;

use hyper::Method;
use serde_json::Value;

use self::http::{Api, ApiError};
use self::target::Target;
use crate::args::{AdminArgs, AdminCommand};

/// The bearer token comes from the environment only, never from an argument (which `ps` shows).
const TOKEN_VAR: &str = "SWITCHBOARD_ADMIN_TOKEN";

/// Runs one admin command; prints its answer or its error, and says how it went.
pub(crate) fn main(args: AdminArgs) -> ExitCode {
    let target = match Target::new(&args.admin, args.ca.as_deref()) {
        Ok(target) => target,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let api = Api {
        target,
        token: std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&api, &args.command)) {
        Ok(answer) => {
            let out = if args.json {
                serde_json::to_string_pretty(&answer).unwrap_or_default() + "\n"
            } else {
                show(&args.command, &answer)
            };
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(exit_code(&error))
        }
    }
}

fn exit_code(error: &ApiError) -> u8 {
    match error {
        ApiError::Unreachable { .. } | ApiError::Tls { .. } | ApiError::Timeout { .. } => 3,
        ApiError::Unauthorized => 4,
        ApiError::NotFound(_) => 5,
        ApiError::Forbidden(_) => 6,
        ApiError::Refused { .. } | ApiError::Garbled(_) => 1,
    }
}

/// A client id as a path segment: ids are printable ASCII without spaces (PROTOCOL.md), so only
/// the characters a path treats specially need escaping.
fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' | '.' | '~' | '@' | ':' => out.push(c),
            other => {
                let mut buf = [0u8; 4];
                for b in other.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

async fn run(api: &Api, command: &AdminCommand) -> Result<Value, ApiError> {
    let (method, path) = match command {
        AdminCommand::Status => (Method::GET, "/api/v1/status".to_owned()),
        AdminCommand::Clients => (Method::GET, "/api/v1/clients".to_owned()),
        AdminCommand::Mailboxes { top, sort } => (
            Method::GET,
            format!("/api/v1/mailboxes?sort={sort}&limit={top}"),
        ),
        AdminCommand::Mailbox {
            id,
            limit,
            after,
            peek,
        } => (
            Method::GET,
            format!(
                "/api/v1/mailboxes/{}?limit={limit}&after={after}&peek={peek}",
                segment(id)
            ),
        ),
        AdminCommand::Remove { id, message_id } => (
            Method::DELETE,
            format!("/api/v1/mailboxes/{}/entries/{message_id}", segment(id)),
        ),
        AdminCommand::Purge { id } => (
            Method::POST,
            format!("/api/v1/mailboxes/{}/purge", segment(id)),
        ),
        AdminCommand::Kick { id } => (
            Method::POST,
            format!("/api/v1/clients/{}/kick", segment(id)),
        ),
    };
    api.call(method, &path).await
}

fn show(command: &AdminCommand, answer: &Value) -> String {
    match command {
        AdminCommand::Status => table::status(answer),
        AdminCommand::Clients => table::clients(answer),
        AdminCommand::Mailboxes { .. } => table::mailboxes(answer),
        AdminCommand::Mailbox { .. } => table::mailbox(answer),
        AdminCommand::Remove { message_id, .. } => {
            table::removed(answer, &format!("removed entry {message_id} of"))
        }
        AdminCommand::Purge { .. } => table::removed(answer, "purged"),
        AdminCommand::Kick { id } => format!("kicked {id}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_travel_safely_in_a_path() {
        assert_eq!(segment("bob"), "bob");
        assert_eq!(segment("a/b?c#d%"), "a%2Fb%3Fc%23d%25");
    }
}
