//! The `Hello`/`Hi` exchange: who may open this connection, and how it becomes the client's.
//!
//! The `Hello` must speak this broker's protocol version and name a valid client id; with credentials
//! configured, its token and the peer's address are checked off the actor thread, and every refusal
//! takes the same time whatever its reason. An admitted client is registered (which takes over any
//! older connection of the same id) and attached to its mailbox before `Hi` goes out, so that no
//! delivery can precede it.

use std::time::Instant;

use actix::prelude::*;
use switchboard_proto::{BrokerFrame, ClientId, ErrorCode, PROTOCOL_VERSION};

use super::Session;
use crate::auth::{Denied, Grant};
use crate::registry;
use crate::router;

/// The fields of a `Hello` frame.
pub(super) struct Hello {
    pub(super) version: u32,
    pub(super) client_id: String,
    pub(super) token: Option<String>,
    pub(super) keepalive_secs: u32,
}

impl Session {
    /// Checks a `Hello`, then admits or refuses the client.
    pub(super) fn on_hello(&mut self, hello: Hello, ctx: &mut Context<Self>) {
        let Hello {
            version,
            client_id,
            token,
            keepalive_secs,
        } = hello;
        if version != PROTOCOL_VERSION {
            return self.fail(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {version} is not supported; this broker speaks {PROTOCOL_VERSION}"),
                ctx,
            );
        }
        let client = match ClientId::new(client_id) {
            Ok(client) => client,
            Err(e) => return self.fail(ErrorCode::InvalidClientId, e.to_string(), ctx),
        };
        if self.auth.is_open() {
            return self.admit(client, keepalive_secs, Grant::default(), ctx);
        }
        // argon2 is slow on purpose: off the actor thread, and nothing else is read meanwhile.
        let (auth, id, ip) = (self.auth.clone(), client.to_string(), self.peer.ip());
        let started = Instant::now();
        let check = async move {
            tokio::task::spawn_blocking(move || auth.check(&id, token.as_deref(), ip))
                .await
                .unwrap_or_else(|_| Err(Denied("the check failed".into())))
        };
        ctx.wait(check.into_actor(self).map(move |result, act, ctx| match result {
            Ok(grant) => act.admit(client, keepalive_secs, grant, ctx),
            Err(Denied(reason)) => {
                act.metrics.auth_failure();
                tracing::warn!(parent: &act.span, client = %client, %reason, "authentication failed");
                // Every refusal takes the same time, whatever the reason.
                act.phase.refuse();
                let delay = act.settings.auth_failure_delay().saturating_sub(started.elapsed());
                ctx.run_later(delay, |act, ctx| {
                    act.fail(ErrorCode::Unauthorized, "not authorized", ctx)
                });
            }
        }));
    }

    /// The `Hello` checked out: register, attach to the mailbox, answer `Hi`.
    fn admit(
        &mut self,
        client: ClientId,
        keepalive_secs: u32,
        grant: Grant,
        ctx: &mut Context<Self>,
    ) {
        let peer = self
            .datagrams
            .join(client.clone(), self.conn_id, grant.clone());
        self.start_datagrams(peer, ctx);
        self.grant = grant;
        self.span.record("client", client.as_str());
        self.keepalive = self.settings.agreed_keepalive(keepalive_secs);
        self.phase.identify(client.clone());
        let register = self.registry.send(registry::Register {
            client: client.clone(),
            conn_id: self.conn_id,
            peer: self.peer,
            session: ctx.address().recipient(),
            traffic: self.traffic.clone(),
        });
        let attach = self.router.send(router::Attach {
            client,
            conn_id: self.conn_id,
            session: ctx.address().recipient(),
            kick: ctx.address().recipient(),
        });
        // `wait`, not `spawn`: no delivery may be written before `Hi`.
        ctx.wait(
            async move {
                register.await.map_err(|e| e.to_string())?;
                attach
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok(pending) => act.greet(pending, ctx),
                Err(error) => {
                    tracing::error!(parent: &act.span, %error, "cannot attach session");
                    act.fail(
                        ErrorCode::Internal,
                        "the broker cannot open this mailbox now",
                        ctx,
                    );
                }
            }),
        );
    }

    /// Registered and attached: `Hi`, with `pending` entries waiting in the mailbox.
    fn greet(&mut self, pending: u64, ctx: &mut Context<Self>) {
        tracing::info!(parent: &self.span, pending, keepalive = self.keepalive.as_secs(), "client connected");
        let hi = BrokerFrame::Hi {
            version: PROTOCOL_VERSION,
            keepalive_secs: u32::try_from(self.keepalive.as_secs()).unwrap_or(u32::MAX),
            address: self.peer.to_string(),
            pending,
            max_body_bytes: self.settings.max_body_bytes() as u64,
            udp_port: None,
            datagram_session: None,
            datagram_key: None,
        };
        let hi = self.offer_udp(hi);
        self.write(hi, ctx);
    }
}
