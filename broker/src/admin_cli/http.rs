//! How `switchboard-broker admin` talks to the admin API: one HTTP/1.1 request per command over a
//! fresh connection (hyper's client), over TLS for an `https://` target (`target.rs`), with the
//! bearer token, a deadline, and errors that say which of the usual things went wrong.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::target::Target;

/// How long a command waits for the broker (a purge of a deep mailbox takes the longest).
const DEADLINE: Duration = Duration::from_secs(60);

/// What went wrong talking to the admin API; each has its own exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("cannot reach the admin listener at {addr}: {cause}")]
    Unreachable { addr: String, cause: String },
    #[error("no TLS with the admin listener at {addr}: {cause}")]
    Tls { addr: String, cause: String },
    #[error("the admin listener at {addr} did not answer within {DEADLINE:?}")]
    Timeout { addr: String },
    #[error("unauthorized: the admin API wants a token (set SWITCHBOARD_ADMIN_TOKEN) and did not get the right one")]
    Unauthorized,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("refused ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the admin listener answered something that is not the API's JSON: {0}")]
    Garbled(String),
}

/// Where the admin API is and how to prove the right to use it.
pub(crate) struct Api {
    pub target: Target,
    pub token: Option<String>,
}

impl Api {
    /// Sends `method path` and returns the JSON answer of a 2xx.
    pub(crate) async fn call(&self, method: Method, path: &str) -> Result<Value, ApiError> {
        match tokio::time::timeout(DEADLINE, self.exchange(method, path)).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::Timeout {
                addr: self.target.authority.clone(),
            }),
        }
    }

    fn unreachable(&self, cause: String) -> ApiError {
        ApiError::Unreachable {
            addr: self.target.authority.clone(),
            cause,
        }
    }

    async fn exchange(&self, method: Method, path: &str) -> Result<Value, ApiError> {
        let addr = &self.target.authority;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        match &self.target.tls {
            None => self.send(stream, method, path).await,
            Some((connector, name)) => {
                let stream =
                    connector
                        .connect(name.clone(), stream)
                        .await
                        .map_err(|e| ApiError::Tls {
                            addr: addr.clone(),
                            cause: e.to_string(),
                        })?;
                self.send(stream, method, path).await
            }
        }
    }

    async fn send<S>(&self, stream: S, method: Method, path: &str) -> Result<Value, ApiError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let unreachable = |e: hyper::Error| self.unreachable(e.to_string());
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(unreachable)?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.target.authority);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| ApiError::Garbled(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(unreachable)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(unreachable)?
            .to_bytes();
        answer(status, &body)
    }
}

/// The JSON of a 2xx answer, or the error the status and body say.
fn answer(status: StatusCode, body: &[u8]) -> Result<Value, ApiError> {
    let text = String::from_utf8_lossy(body);
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    if status.is_success() {
        return parsed.map_err(|e| ApiError::Garbled(format!("{e}: {text}")));
    }
    let message = parsed
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned());
    Err(match status {
        StatusCode::UNAUTHORIZED => ApiError::Unauthorized,
        StatusCode::FORBIDDEN => ApiError::Forbidden(message),
        StatusCode::NOT_FOUND => ApiError::NotFound(message),
        status => ApiError::Refused {
            status: status.as_u16(),
            message,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_the_errors_operators_tell_apart() {
        let ok = answer(StatusCode::OK, br#"{"kicked":true}"#).unwrap();
        assert_eq!(ok["kicked"], true);
        assert!(matches!(
            answer(
                StatusCode::UNAUTHORIZED,
                b"a valid admin token is required\n"
            ),
            Err(ApiError::Unauthorized)
        ));
        match answer(
            StatusCode::NOT_FOUND,
            br#"{"error":"bob is not connected"}"#,
        ) {
            Err(ApiError::NotFound(m)) => assert_eq!(m, "bob is not connected"),
            other => panic!("{other:?}"),
        }
        match answer(StatusCode::FORBIDDEN, br#"{"error":"read only"}"#) {
            Err(ApiError::Forbidden(m)) => assert_eq!(m, "read only"),
            other => panic!("{other:?}"),
        }
        match answer(StatusCode::CONFLICT, br#"{"error":"handed out"}"#) {
            Err(ApiError::Refused {
                status: 409,
                message,
            }) => assert_eq!(message, "handed out"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            answer(StatusCode::OK, b"<html>"),
            Err(ApiError::Garbled(_))
        ));
    }
}
