//! Broker frames from their bytes: `hi`, `accepted`, `rejected`, `deliver`, `receipt`, `pong`,
//! `error`, `datagram`. Codes (`reason`, `status`, `code`) this build does not know read as `Unknown`.

use bytes::Bytes;

use super::{datagram, fields, need, optional, put, tag, unknown, whole, DecodeError, DecodeFrame};
use crate::frame::{BrokerFrame, ErrorCode, ReceiptStatus, RejectReason};
use crate::msgpack::Reader;

impl DecodeFrame for BrokerFrame {
    fn decode_frame(frame: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(frame);
        let (tag, entries) = tag(&mut r)?;
        let r = &mut r;
        let read = match tag {
            b"deliver" => deliver(r, entries),
            b"accepted" => accepted(r, entries),
            b"receipt" => receipt(r, entries),
            b"rejected" => rejected(r, entries),
            b"hi" => hi(r, entries),
            b"pong" => fields(r, entries, |_, _| Ok(false)).map(|()| BrokerFrame::Pong),
            b"error" => error(r, entries),
            b"datagram" => {
                let (from, body) = datagram(r, entries, "from")?;
                Ok(BrokerFrame::Datagram { from, body })
            }
            other => Err(unknown(other)),
        };
        whole(r, read)
    }
}

fn deliver(r: &mut Reader<'_>, entries: usize) -> Result<BrokerFrame, DecodeError> {
    let (mut message_id, mut from, mut send_id, mut sent_at_ms, mut body) =
        (None, None, None, None, None);
    fields(r, entries, |key, r| {
        match key {
            b"message_id" => put(&mut message_id, "message_id", r.uint("message_id")?)?,
            b"from" => put(&mut from, "from", r.string("from")?)?,
            b"send_id" => put(&mut send_id, "send_id", r.uint("send_id")?)?,
            b"sent_at_ms" => put(&mut sent_at_ms, "sent_at_ms", r.uint("sent_at_ms")?)?,
            b"body" => put(&mut body, "body", r.bytes("body")?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(BrokerFrame::Deliver {
        message_id: need(message_id, "message_id")?,
        from: need(from, "from")?,
        send_id: send_id.unwrap_or(0),
        sent_at_ms: need(sent_at_ms, "sent_at_ms")?,
        body: need(body, "body")?,
    })
}

fn accepted(r: &mut Reader<'_>, entries: usize) -> Result<BrokerFrame, DecodeError> {
    let (mut send_id, mut message_id) = (None, None);
    fields(r, entries, |key, r| {
        match key {
            b"id" => put(&mut send_id, "id", r.uint("id")?)?,
            b"message_id" => put(&mut message_id, "message_id", r.uint("message_id")?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(BrokerFrame::Accepted {
        send_id: need(send_id, "id")?,
        message_id: need(message_id, "message_id")?,
    })
}

fn receipt(r: &mut Reader<'_>, entries: usize) -> Result<BrokerFrame, DecodeError> {
    let (mut receipt_id, mut send_id, mut message_id, mut to, mut status) =
        (None, None, None, None, None);
    fields(r, entries, |key, r| {
        match key {
            b"receipt_id" => put(&mut receipt_id, "receipt_id", r.uint("receipt_id")?)?,
            b"id" => put(&mut send_id, "id", r.uint("id")?)?,
            b"message_id" => put(&mut message_id, "message_id", r.uint("message_id")?)?,
            b"to" => put(&mut to, "to", r.string("to")?)?,
            b"status" => put(
                &mut status,
                "status",
                ReceiptStatus::from_wire(r.raw("status")?),
            )?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(BrokerFrame::Receipt {
        receipt_id: need(receipt_id, "receipt_id")?,
        send_id: need(send_id, "id")?,
        message_id: need(message_id, "message_id")?,
        to: need(to, "to")?,
        status: need(status, "status")?,
    })
}

fn rejected(r: &mut Reader<'_>, entries: usize) -> Result<BrokerFrame, DecodeError> {
    let (mut send_id, mut reason, mut text) = (None, None, None);
    fields(r, entries, |key, r| {
        match key {
            b"id" => put(&mut send_id, "id", r.uint("id")?)?,
            b"reason" => put(
                &mut reason,
                "reason",
                RejectReason::from_wire(r.raw("reason")?),
            )?,
            b"text" => put(&mut text, "text", r.string("text")?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(BrokerFrame::Rejected {
        send_id: need(send_id, "id")?,
        reason: need(reason, "reason")?,
        text: need(text, "text")?,
    })
}

fn hi(r: &mut Reader<'_>, entries: usize) -> Result<BrokerFrame, DecodeError> {
    let (mut version, mut keepalive, mut address, mut pending, mut max_body) =
        (None, None, None, None, None);
    let (mut udp_port, mut session, mut datagram_key) = (None, None, None);
    fields(r, entries, |key, r| {
        match key {
            b"version" => put(&mut version, "version", r.u32("version")?)?,
            b"keepalive_secs" => put(&mut keepalive, "keepalive_secs", r.u32("keepalive_secs")?)?,
            b"address" => put(&mut address, "address", r.string("address")?)?,
            b"pending" => put(&mut pending, "pending", r.uint("pending")?)?,
            b"max_body_bytes" => put(&mut max_body, "max_body_bytes", r.uint("max_body_bytes")?)?,
            b"udp_port" => put(
                &mut udp_port,
                "udp_port",
                optional(r, |r| r.u16("udp_port"))?,
            )?,
            b"datagram_session" => put(
                &mut session,
                "datagram_session",
                optional(r, |r| r.uint("datagram_session"))?,
            )?,
            b"datagram_key" => put(
                &mut datagram_key,
                "datagram_key",
                optional(r, |r| r.bytes("datagram_key"))?,
            )?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(BrokerFrame::Hi {
        version: need(version, "version")?,
        keepalive_secs: need(keepalive, "keepalive_secs")?,
        address: need(address, "address")?,
        pending: need(pending, "pending")?,
        max_body_bytes: max_body.unwrap_or(0),
        udp_port: udp_port.flatten(),
        datagram_session: session.flatten(),
        datagram_key: datagram_key.flatten(),
    })
}

fn error(r: &mut Reader<'_>, entries: usize) -> Result<BrokerFrame, DecodeError> {
    let (mut code, mut text) = (None, None);
    fields(r, entries, |key, r| {
        match key {
            b"code" => put(&mut code, "code", ErrorCode::from_wire(r.raw("code")?))?,
            b"text" => put(&mut text, "text", r.string("text")?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(BrokerFrame::Error {
        code: need(code, "code")?,
        text: need(text, "text")?,
    })
}
