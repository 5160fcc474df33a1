//! The admin API's questions (`GET /api/v1/...`): who is connected, which mailboxes are deepest,
//! what one mailbox holds.
//!
//! Each asks the Registry or the Router with a bounded wait ([`ASK_DEADLINE`]) and the store only
//! through its thread (via the Router, or [`StoreHandle`](crate::store::StoreHandle) for the age of
//! the oldest entries), so a slow answer costs the operator a 503, never a stalled actor.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use switchboard_proto::ClientId;

use super::access::{forbidden, Role};
use super::json::{
    ApiError, ClientJson, EntryJson, MailboxEntriesJson, MailboxJson, MailboxesJson,
};
use super::{now_ms, AdminState};
use crate::registry::ListClients;
use crate::router::{ListMailboxes, ListWindows, MailboxInfo, MailboxOrder, ReadEntries};

/// How long the API waits for an actor or the store before answering 503.
pub(crate) const ASK_DEADLINE: Duration = Duration::from_secs(5);
/// The most mailboxes or entries one page may ask for.
pub(crate) const MAX_PAGE: usize = 1_000;
/// The most body bytes a peek shows.
pub(crate) const MAX_PEEK: usize = 4_096;

/// Sends `msg` to `actor` and waits at most [`ASK_DEADLINE`].
pub(crate) async fn ask<A, M>(actor: &Addr<A>, msg: M, who: &str) -> Result<M::Result, ApiError>
where
    A: Actor + Handler<M>,
    A::Context: actix::dev::ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    match tokio::time::timeout(ASK_DEADLINE, actor.send(msg)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(ApiError::Unavailable(format!("the {who} has stopped"))),
        Err(_) => Err(ApiError::Unavailable(format!(
            "the {who} did not answer in time"
        ))),
    }
}

/// A client id from the path, checked against the id rules.
pub(crate) fn client_id(id: String) -> Result<ClientId, ApiError> {
    ClientId::new(id).map_err(|e| ApiError::BadRequest(format!("not a client id: {e}")))
}

fn since_epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds from `then_ms` to `now_ms`.
pub(crate) fn age_secs(now_ms: u64, then_ms: u64) -> u64 {
    now_ms.saturating_sub(then_ms) / 1_000
}

/// `GET /api/v1/clients`: every connected client, by id.
pub(crate) async fn clients(
    State(state): State<AdminState>,
) -> Result<Json<Vec<ClientJson>>, ApiError> {
    let rows = ask(&state.broker.registry, ListClients, "registry").await?;
    let windows = ask(&state.broker.router, ListWindows, "router").await?.0;
    let now = now_ms();
    let mut clients: Vec<ClientJson> = rows
        .into_iter()
        .map(|row| {
            let (window_entries, window_bytes) = windows
                .get(row.client.as_str())
                .copied()
                .unwrap_or_default();
            let since = since_epoch_ms(row.info.since);
            ClientJson {
                id: row.client.into_string(),
                address: row.info.peer.to_string(),
                connected_since_ms: since,
                connected_secs: age_secs(now, since),
                window_entries,
                window_bytes,
                bytes_in: row.received,
                bytes_out: row.sent,
            }
        })
        .collect();
    clients.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(clients))
}

/// The query of `GET /api/v1/mailboxes`.
#[derive(Debug, Deserialize)]
pub(crate) struct MailboxesQuery {
    #[serde(default = "depth")]
    sort: MailboxOrder,
    #[serde(default)]
    offset: usize,
    #[serde(default = "fifty")]
    limit: usize,
}

fn depth() -> MailboxOrder {
    MailboxOrder::Depth
}

fn fifty() -> usize {
    50
}

fn order_name(order: MailboxOrder) -> &'static str {
    match order {
        MailboxOrder::Depth => "depth",
        MailboxOrder::Bytes => "bytes",
        MailboxOrder::Id => "id",
    }
}

/// `GET /api/v1/mailboxes`: a page of the non-empty mailboxes, deepest first by default.
pub(crate) async fn mailboxes(
    State(state): State<AdminState>,
    Query(query): Query<MailboxesQuery>,
) -> Result<Json<MailboxesJson>, ApiError> {
    mailbox_page(&state, query.sort, query.offset, query.limit)
        .await
        .map(Json)
}

/// A page of the non-empty mailboxes in `order`, with the age of each one's oldest entry.
pub(crate) async fn mailbox_page(
    state: &AdminState,
    order: MailboxOrder,
    offset: usize,
    limit: usize,
) -> Result<MailboxesJson, ApiError> {
    let limit = limit.min(MAX_PAGE);
    let list = ListMailboxes {
        order,
        offset,
        limit,
    };
    let page = ask(&state.broker.router, list, "router").await?;
    let ids: Vec<String> = page.rows.iter().map(|r| r.mailbox.clone()).collect();
    let heads = match tokio::time::timeout(ASK_DEADLINE, state.broker.store.heads(ids)).await {
        Ok(Ok(heads)) => heads,
        Ok(Err(error)) => return Err(ApiError::Unavailable(format!("store failed: {error}"))),
        Err(_) => {
            return Err(ApiError::Unavailable(
                "the store did not answer in time".into(),
            ))
        }
    };
    let now = now_ms();
    let mailboxes = page
        .rows
        .into_iter()
        .zip(heads)
        .map(|(row, head)| MailboxJson {
            id: row.mailbox,
            entries: row.entries,
            bytes: row.bytes,
            oldest_entry_age_secs: head.map(|at| age_secs(now, at)),
            online: row.online,
        })
        .collect();
    Ok(MailboxesJson {
        total: page.total,
        offset,
        limit,
        sort: order_name(order),
        mailboxes,
    })
}

/// The query of `GET /api/v1/mailboxes/{id}`.
#[derive(Debug, Deserialize)]
pub(crate) struct EntriesQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "fifty")]
    limit: usize,
    /// Body bytes to show of each entry; 0 for none.
    #[serde(default)]
    peek: usize,
}

/// `GET /api/v1/mailboxes/{id}`: one mailbox's counts and a page of its entries (metadata, body
/// size, an optional peek at the body: only for the full token, as a body is the message itself).
pub(crate) async fn mailbox(
    State(state): State<AdminState>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    Query(query): Query<EntriesQuery>,
) -> Result<Json<MailboxEntriesJson>, ApiError> {
    if query.peek > 0 && role < Role::Full {
        return Err(forbidden(role, "a peek at bodies"));
    }
    let id = client_id(id)?.into_string();
    let limit = query.limit.min(MAX_PAGE);
    let peek = query.peek.min(MAX_PEEK);
    let info = ask(&state.broker.router, MailboxInfo(id.clone()), "router").await?;
    let read = ReadEntries {
        mailbox: id.clone(),
        after: query.after,
        limit,
    };
    let listed = ask(&state.broker.router, read, "router")
        .await?
        .map_err(|e| ApiError::Unavailable(format!("store failed: {e}")))?;
    Ok(Json(MailboxEntriesJson {
        id,
        entries: info.entries,
        bytes: info.bytes,
        online: info.online,
        after: query.after,
        limit,
        page: listed
            .into_iter()
            .map(|l| EntryJson::new(l, peek))
            .collect(),
    }))
}
