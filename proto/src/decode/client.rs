//! Client frames from their bytes: `hello`, `send`, `ack`, `ping`, `bye`, `datagram`.

use super::{datagram, fields, need, optional, put, tag, unknown, whole, DecodeError, DecodeFrame};
use crate::frame::{ClientFrame, Receipts};
use crate::msgpack::Reader;
use bytes::Bytes;

impl DecodeFrame for ClientFrame {
    fn decode_frame(frame: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(frame);
        let (tag, entries) = tag(&mut r)?;
        let read = match tag {
            b"send" => send(&mut r, entries),
            b"ack" => {
                let mut id = None;
                fields(&mut r, entries, |key, r| {
                    if key != b"id" {
                        return Ok(false);
                    }
                    put(&mut id, "id", r.uint("id")?)?;
                    Ok(true)
                })?;
                Ok(ClientFrame::Ack {
                    id: need(id, "id")?,
                })
            }
            b"hello" => hello(&mut r, entries),
            b"ping" => fields(&mut r, entries, |_, _| Ok(false)).map(|()| ClientFrame::Ping),
            b"bye" => fields(&mut r, entries, |_, _| Ok(false)).map(|()| ClientFrame::Bye),
            b"datagram" => {
                let (to, body) = datagram(&mut r, entries, "to")?;
                Ok(ClientFrame::Datagram { to, body })
            }
            other => Err(unknown(other)),
        };
        whole(&r, read)
    }
}

fn send(r: &mut Reader<'_>, entries: usize) -> Result<ClientFrame, DecodeError> {
    let (mut send_id, mut to, mut body, mut ttl_ms, mut fresh) = (None, None, None, None, None);
    let mut receipts = None;
    fields(r, entries, |key, r| {
        match key {
            b"id" => put(&mut send_id, "id", r.uint("id")?)?,
            b"to" => put(&mut to, "to", r.string("to")?)?,
            b"body" => put(&mut body, "body", r.bytes("body")?)?,
            b"ttl_ms" => put(&mut ttl_ms, "ttl_ms", optional(r, |r| r.uint("ttl_ms"))?)?,
            b"fresh" => put(&mut fresh, "fresh", optional(r, |r| r.bool("fresh"))?)?,
            b"receipts" => put(&mut receipts, "receipts", optional(r, receipts_choice)?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(ClientFrame::Send {
        send_id: need(send_id, "id")?,
        to: need(to, "to")?,
        body: need(body, "body")?,
        ttl_ms: ttl_ms.flatten(),
        fresh: fresh.flatten().unwrap_or(false),
        receipts: receipts.flatten().unwrap_or_default(),
    })
}

/// `all`, `delivered` or `none`; anything else is the wrong value.
fn receipts_choice(r: &mut Reader<'_>) -> Result<Receipts, DecodeError> {
    Receipts::from_wire(r.raw("receipts")?).ok_or(DecodeError::WrongType {
        field: "receipts",
        expected: "all, delivered or none",
    })
}

fn hello(r: &mut Reader<'_>, entries: usize) -> Result<ClientFrame, DecodeError> {
    let (mut version, mut client_id, mut token, mut keepalive) = (None, None, None, None);
    fields(r, entries, |key, r| {
        match key {
            b"version" => put(&mut version, "version", r.u32("version")?)?,
            b"client_id" => put(&mut client_id, "client_id", r.string("client_id")?)?,
            b"token" => put(&mut token, "token", optional(r, |r| r.string("token"))?)?,
            b"keepalive_secs" => put(&mut keepalive, "keepalive_secs", r.u32("keepalive_secs")?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(ClientFrame::Hello {
        version: need(version, "version")?,
        client_id: need(client_id, "client_id")?,
        token: token.flatten(),
        keepalive_secs: need(keepalive, "keepalive_secs")?,
    })
}
