//! The admin API's answers as JSON, and its errors as HTTP statuses with a JSON body: the shapes the
//! OpenAPI document (`openapi.json`) describes and its test checks.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Serialize;

use crate::router::{Listed, Removal};
use crate::store::EntryKind;

/// An error answer: `{"error": "..."}` with its status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A path or query parameter that makes no sense (400).
    #[error("{0}")]
    BadRequest(String),
    /// The token's role may not ask this (403): the read-only token asked for a body or an action.
    #[error("{0}")]
    Forbidden(String),
    /// No such client, mailbox entry or path (404).
    #[error("{0}")]
    NotFound(String),
    /// The entry is handed out and awaits its ack (409).
    #[error("{0}")]
    Busy(String),
    /// The Router, Registry or store did not answer in time or failed (503).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Busy(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.to_string(),
        };
        (self.status(), Json(body)).into_response()
    }
}

/// One connected client.
#[derive(Debug, Serialize)]
pub(crate) struct ClientJson {
    pub id: String,
    pub address: String,
    /// When this connection's `hello` was admitted, ms since the Unix epoch.
    pub connected_since_ms: u64,
    pub connected_secs: u64,
    /// Entries handed out and not acknowledged, and their body bytes.
    pub window_entries: u64,
    pub window_bytes: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One non-empty mailbox.
#[derive(Debug, Serialize)]
pub(crate) struct MailboxJson {
    pub id: String,
    pub entries: u64,
    pub bytes: u64,
    /// Seconds since its oldest entry was accepted; `null` if it emptied meanwhile.
    pub oldest_entry_age_secs: Option<u64>,
    pub online: bool,
}

/// A page of mailboxes.
#[derive(Debug, Serialize)]
pub(crate) struct MailboxesJson {
    /// Non-empty mailboxes in all.
    pub total: u64,
    pub offset: usize,
    pub limit: usize,
    pub sort: &'static str,
    pub mailboxes: Vec<MailboxJson>,
}

/// One entry of a mailbox, without its body unless a peek was asked for.
#[derive(Debug, Serialize)]
pub(crate) struct EntryJson {
    pub id: u64,
    /// `message`, or the receipt's status: `delivered`, `expired`, `removed`.
    pub kind: &'static str,
    /// A message's sender; a receipt's recipient of the original message.
    pub peer: String,
    pub send_id: u64,
    pub message_id: u64,
    pub sent_at_ms: u64,
    /// 0 for never.
    pub expires_at_ms: u64,
    pub body_bytes: u64,
    /// Handed to the owner's session and not acknowledged yet (remove answers 409).
    pub handed_out: bool,
    /// The first `peek` bytes of the body, base64; absent without `peek`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_peek_base64: Option<String>,
}

impl EntryJson {
    pub(crate) fn new(listed: Listed, peek: usize) -> Self {
        let entry = listed.entry;
        let body_peek_base64 = (peek > 0).then(|| {
            let shown = &entry.body[..entry.body.len().min(peek)];
            base64::engine::general_purpose::STANDARD.encode(shown)
        });
        Self {
            id: entry.id,
            kind: kind_name(entry.kind),
            peer: entry.peer,
            send_id: entry.send_id,
            message_id: entry.message_id,
            sent_at_ms: entry.sent_at_ms,
            expires_at_ms: entry.expires_at_ms,
            body_bytes: entry.body.len() as u64,
            handed_out: listed.handed_out,
            body_peek_base64,
        }
    }
}

/// The name an entry kind has in the API (a receipt's is its status on the wire).
pub(crate) fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Message => "message",
        EntryKind::Delivered => "delivered",
        EntryKind::Expired => "expired",
        EntryKind::Removed => "removed",
        EntryKind::Undeliverable => "undeliverable",
    }
}

/// One mailbox and a page of its entries.
#[derive(Debug, Serialize)]
pub(crate) struct MailboxEntriesJson {
    pub id: String,
    /// Committed entries and body bytes, as the Router counts them.
    pub entries: u64,
    pub bytes: u64,
    pub online: bool,
    /// Up to `limit` entries with an id above `after`, in id order.
    pub after: u64,
    pub limit: usize,
    pub page: Vec<EntryJson>,
}

/// What a remove or purge did.
#[derive(Debug, Default, Serialize)]
pub(crate) struct RemovedJson {
    pub mailbox: String,
    pub removed: u64,
    /// Senders sent a `removed` receipt.
    pub receipts: u64,
    /// Entries left because they are handed out and await their ack.
    pub busy: u64,
}

impl RemovedJson {
    pub(crate) fn add(&mut self, removal: &Removal) {
        self.removed += removal.removed;
        self.receipts += removal.receipts;
        self.busy += removal.busy;
    }
}

/// What a kick did.
#[derive(Debug, Serialize)]
pub(crate) struct KickedJson {
    pub client: String,
    pub kicked: bool,
}
