//! The admin API's actions: remove one entry, purge a mailbox, kick a client. Each is logged with
//! who asked (the remote address, and whether the request carried the admin token) and what it did.
//!
//! A removed or purged message's sender gets a `removed` receipt; a kicked client an `error` frame
//! with code `kicked`. An entry handed out and awaiting its ack is left to that delivery (409 for a
//! single remove, counted as `busy` by a purge): kick the client first to take it back.

use axum::extract::{ConnectInfo, Path, State};
use axum::Json;

use super::api::{ask, client_id, ASK_DEADLINE};
use super::json::{ApiError, KickedJson, RemovedJson};
use super::tls::Peer;
use super::AdminState;
use crate::registry::KickClient;
use crate::router::{Removal, Remove, Target, PURGE_PAGE};

/// Who asked for an action, for the log.
struct Asker {
    address: std::net::SocketAddr,
    with_token: bool,
}

impl Asker {
    fn new(state: &AdminState, Peer(address): Peer) -> Self {
        Self {
            address,
            // The middleware let the request through: with a token set, it carried the full one.
            with_token: state.tokens.guarded(),
        }
    }
}

/// Asks the Router to remove `target` of `mailbox`; a removal waits for its commit, so it gets a
/// longer deadline than a question.
async fn remove(state: &AdminState, mailbox: &str, target: Target) -> Result<Removal, ApiError> {
    let msg = Remove {
        mailbox: mailbox.to_owned(),
        target,
    };
    match tokio::time::timeout(2 * ASK_DEADLINE, state.broker.router.send(msg)).await {
        Ok(Ok(Ok(removal))) => Ok(removal),
        Ok(Ok(Err(error))) => Err(ApiError::Unavailable(error.to_string())),
        Ok(Err(_)) => Err(ApiError::Unavailable("the router has stopped".into())),
        Err(_) => Err(ApiError::Unavailable(
            "the router did not answer in time; the removal may still happen".into(),
        )),
    }
}

/// `DELETE /api/v1/mailboxes/{id}/entries/{entry}`: removes one entry.
pub(crate) async fn remove_entry(
    State(state): State<AdminState>,
    ConnectInfo(address): ConnectInfo<Peer>,
    Path((id, entry)): Path<(String, u64)>,
) -> Result<Json<RemovedJson>, ApiError> {
    let mailbox = client_id(id)?.into_string();
    let asker = Asker::new(&state, address);
    let removal = remove(&state, &mailbox, Target::One(entry)).await?;
    tracing::warn!(
        action = "remove",
        mailbox,
        entry,
        by = %asker.address,
        with_token = asker.with_token,
        removed = removal.removed,
        busy = removal.busy,
        "admin: remove entry {entry} of {mailbox}"
    );
    if removal.busy > 0 {
        return Err(ApiError::Busy(format!(
            "entry {entry} is handed out to {mailbox} and awaits its ack; kick the client first"
        )));
    }
    if removal.removed == 0 {
        return Err(ApiError::NotFound(format!(
            "mailbox {mailbox} holds no entry {entry}"
        )));
    }
    let mut answer = RemovedJson {
        mailbox,
        ..RemovedJson::default()
    };
    answer.add(&removal);
    Ok(Json(answer))
}

/// `POST /api/v1/mailboxes/{id}/purge`: removes every committed entry not handed out, a page at a
/// time.
pub(crate) async fn purge(
    State(state): State<AdminState>,
    ConnectInfo(address): ConnectInfo<Peer>,
    Path(id): Path<String>,
) -> Result<Json<RemovedJson>, ApiError> {
    let mailbox = client_id(id)?.into_string();
    let asker = Asker::new(&state, address);
    let mut answer = RemovedJson {
        mailbox: mailbox.clone(),
        ..RemovedJson::default()
    };
    let mut after = 0;
    let outcome = loop {
        match remove(&state, &mailbox, Target::After(after)).await {
            Ok(removal) => {
                answer.add(&removal);
                if removal.read < PURGE_PAGE {
                    break Ok(());
                }
                after = removal.last_read;
            }
            Err(error) => break Err(error),
        }
    };
    tracing::warn!(
        action = "purge",
        mailbox,
        by = %asker.address,
        with_token = asker.with_token,
        removed = answer.removed,
        receipts = answer.receipts,
        busy = answer.busy,
        failed = outcome.is_err(),
        "admin: purge {mailbox}"
    );
    outcome.map(|()| Json(answer))
}

/// `POST /api/v1/clients/{id}/kick`: disconnects a client with the error code `kicked`.
pub(crate) async fn kick(
    State(state): State<AdminState>,
    ConnectInfo(address): ConnectInfo<Peer>,
    Path(id): Path<String>,
) -> Result<Json<KickedJson>, ApiError> {
    let client = client_id(id)?;
    let asker = Asker::new(&state, address);
    let msg = KickClient {
        client: client.clone(),
        by: format!("admin API from {}", asker.address),
    };
    let kicked = ask(&state.broker.registry, msg, "registry").await?;
    tracing::warn!(
        action = "kick",
        client = %client,
        by = %asker.address,
        with_token = asker.with_token,
        kicked,
        "admin: kick {client}"
    );
    if !kicked {
        return Err(ApiError::NotFound(format!("{client} is not connected")));
    }
    Ok(Json(KickedJson {
        client: client.into_string(),
        kicked,
    }))
}
