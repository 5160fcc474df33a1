//! The JSON lines `listen` and `poll` print: one object per message or receipt.
//!
//! ```text
//! {"type":"message","id":42,"from":"alice","send_id":1700000000000001,"sent_at":"2026-11-24T18:00:00.123Z","body":"hi bob"}
//! {"type":"receipt","id":1700000000000001,"message_id":42,"to":"bob","status":"delivered"}
//! ```
//!
//! A message's `id` is the broker's message id (the one acknowledged); `send_id` is the sender's
//! send id, which with `from` names the message even when a broker crash makes it come
//! again under a new `id` (0 from brokers that do not send it). A body that is not UTF-8 is printed
//! as `body_b64`, standard base64 with padding, instead of `body`. A receipt's `id` is the send id of
//! the message it is about.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Serialize;
use switchboard_client::{Datagram, Message, Receipt};

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z); later times print as this.
const LATEST_PRINTABLE: Duration = Duration::from_millis(253_402_300_799_999);

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Message {
        id: u64,
        from: &'a str,
        send_id: u64,
        sent_at: String,
        #[serde(flatten)]
        body: Body,
    },
    Receipt {
        /// The send id of the message the receipt is for.
        #[serde(rename = "id")]
        send_id: u64,
        message_id: u64,
        to: &'a str,
        status: &'static str,
    },
    Datagram {
        from: &'a str,
        #[serde(flatten)]
        body: Body,
    },
}

#[derive(Serialize)]
enum Body {
    #[serde(rename = "body")]
    Text(String),
    #[serde(rename = "body_b64")]
    Base64(String),
}

/// A body as text when it is UTF-8, else base64.
fn body(bytes: &[u8]) -> Body {
    match std::str::from_utf8(bytes) {
        Ok(text) => Body::Text(text.to_owned()),
        Err(_) => Body::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

/// The line for a datagram: `{"type":"datagram","from":...,"body":...}`.
pub(crate) fn datagram_line(datagram: &Datagram) -> serde_json::Result<String> {
    serde_json::to_string(&Line::Datagram {
        from: &datagram.from,
        body: body(&datagram.body),
    })
}

/// The line for a delivered message.
pub(crate) fn message_line(message: &Message) -> serde_json::Result<String> {
    let body = body(&message.body);
    serde_json::to_string(&Line::Message {
        id: message.message_id,
        from: &message.from,
        send_id: message.send_id,
        sent_at: rfc3339_millis(message.sent_at),
        body,
    })
}

/// The line for a receipt.
pub(crate) fn receipt_line(receipt: &Receipt) -> serde_json::Result<String> {
    serde_json::to_string(&Line::Receipt {
        send_id: receipt.send_id,
        message_id: receipt.message_id,
        to: &receipt.to,
        status: receipt.status.as_str(),
    })
}

/// `2026-11-24T18:00:00.123Z`. `humantime` refuses years past 9999, so later times are clamped.
pub(crate) fn rfc3339_millis(time: SystemTime) -> String {
    let time = time.min(UNIX_EPOCH + LATEST_PRINTABLE);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use switchboard_client::ReceiptStatus;

    use super::*;

    fn message(body: &'static [u8]) -> Message {
        Message {
            message_id: 42,
            from: "alice".into(),
            send_id: 1_700_000_000_000_001,
            sent_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn a_text_message_is_one_line_with_its_body() {
        let line = message_line(&message(b"hi \"bob\"\n")).unwrap();
        assert_eq!(
            line,
            r#"{"type":"message","id":42,"from":"alice","send_id":1700000000000001,"sent_at":"2023-11-14T22:13:20.123Z","body":"hi \"bob\"\n"}"#
        );
    }

    #[test]
    fn a_binary_body_is_base64_under_its_own_key() {
        let line = message_line(&message(&[0xff, 0xfe, 0x00, b'x'])).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["body_b64"], "//4AeA==");
        assert!(value.get("body").is_none());
    }

    #[test]
    fn an_empty_body_is_empty_text() {
        let value: serde_json::Value =
            serde_json::from_str(&message_line(&message(b"")).unwrap()).unwrap();
        assert_eq!(value["body"], "");
    }

    #[test]
    fn a_receipt_line_names_the_send_and_the_recipient() {
        let receipt = Receipt {
            receipt_id: 43,
            send_id: 1_700_000_000_000_001,
            message_id: 42,
            to: "bob".into(),
            status: ReceiptStatus::Delivered,
        };
        assert_eq!(
            receipt_line(&receipt).unwrap(),
            r#"{"type":"receipt","id":1700000000000001,"message_id":42,"to":"bob","status":"delivered"}"#
        );
    }

    #[test]
    fn an_expired_receipt_says_expired() {
        let receipt = Receipt {
            receipt_id: 45,
            send_id: 7,
            message_id: 44,
            to: "bob".into(),
            status: ReceiptStatus::Expired,
        };
        let value: serde_json::Value =
            serde_json::from_str(&receipt_line(&receipt).unwrap()).unwrap();
        assert_eq!(value["status"], "expired");
    }

    #[test]
    fn times_past_year_9999_are_clamped_not_a_panic() {
        let far = UNIX_EPOCH + Duration::from_millis(u64::MAX / 4);
        assert_eq!(rfc3339_millis(far), "9999-12-31T23:59:59.999Z");
    }
}
