//! Who may do what on the admin API: the bearer token a request carries decides its [`Role`].
//!
//! `admin.token` has every right; `admin.read_token` may read counts and metadata, never a body
//! (`peek`) and no action. Without any token set (loopback only) every request has every right.
//! Tokens are compared as SHA-256 digests in constant time, so neither a token's bytes nor its
//! length show in the time an answer takes. A request without a known token is answered 401; one
//! whose token lacks the right, 403 with a JSON error body.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::json::ApiError;
use crate::settings::AdminSettings;

/// What a request may do, by the token it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    /// Counts and metadata: status, clients, mailboxes, entries without bodies, metrics.
    Read,
    /// Everything: also body peeks, remove, purge, kick.
    Full,
}

impl Role {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Full => "full",
        }
    }
}

/// The digests of the configured tokens.
#[derive(Clone, Default)]
pub(crate) struct Tokens {
    full: Option<[u8; 32]>,
    read: Option<[u8; 32]>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn matches(given: &[u8; 32], expected: Option<&[u8; 32]>) -> bool {
    expected.is_some_and(|expected| bool::from(given.ct_eq(expected)))
}

impl Tokens {
    pub(crate) fn new(settings: &AdminSettings) -> Self {
        let set = |t: &str| (!t.is_empty()).then(|| digest(t));
        Self {
            full: set(&settings.token),
            read: set(&settings.read_token),
        }
    }

    /// Whether any token guards the API (else it is open, on loopback).
    pub(crate) fn guarded(&self) -> bool {
        self.full.is_some()
    }

    /// The role of a request with these headers, `None` if it carries no token the broker knows.
    pub(crate) fn role(&self, headers: &HeaderMap) -> Option<Role> {
        if !self.guarded() {
            return Some(Role::Full);
        }
        let given = digest(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))?,
        );
        // Both compared, whichever matches, so the time taken does not tell them apart.
        let (full, read) = (
            matches(&given, self.full.as_ref()),
            matches(&given, self.read.as_ref()),
        );
        if full {
            Some(Role::Full)
        } else if read {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// What a guarded group of routes needs, as the middleware's state.
#[derive(Clone)]
pub(crate) struct Guard {
    pub tokens: Tokens,
    pub needs: Role,
}

/// 401 without a known token, 403 when its role is below what the route needs; otherwise the
/// request goes on with its [`Role`] in its extensions (a handler may refuse part of a question,
/// such as a body peek).
pub(crate) async fn authorize(
    State(guard): State<Guard>,
    headers: HeaderMap,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(role) = guard.tokens.role(&headers) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid admin token is required\n",
        )
            .into_response();
    };
    if role < guard.needs {
        let what = format!("{} {}", request.method(), request.uri().path());
        return forbidden(role, &what).into_response();
    }
    request.extensions_mut().insert(role);
    next.run(request).await
}

/// The 403 for `role` asking for `what` (a request, or part of one).
pub(crate) fn forbidden(role: Role, what: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "forbidden for the {} admin token: {what} needs admin.token",
        role.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Bearer {token}").parse().unwrap();
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    #[test]
    fn the_token_decides_the_role() {
        let settings = AdminSettings {
            token: "full-token".into(),
            read_token: "read-token".into(),
            ..AdminSettings::default()
        };
        let tokens = Tokens::new(&settings);
        assert_eq!(tokens.role(&bearer("full-token")), Some(Role::Full));
        assert_eq!(tokens.role(&bearer("read-token")), Some(Role::Read));
        assert_eq!(tokens.role(&bearer("read-tokenx")), None);
        assert_eq!(tokens.role(&bearer("")), None);
        assert_eq!(tokens.role(&HeaderMap::new()), None);
        let open = Tokens::new(&AdminSettings::default());
        assert_eq!(open.role(&HeaderMap::new()), Some(Role::Full));
    }
}
