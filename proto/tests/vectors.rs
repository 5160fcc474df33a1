//! The test vectors in `PROTOCOL.md`, checked against this crate's encoder and decoders.
//!
//! `PROTOCOL.md` is what implementers in other languages work from, so its bytes must be the bytes
//! this crate really writes and reads. Three kinds of fenced block are checked:
//! - `vector`: exactly one per frame kind. The value encodes to exactly the hex, and the hex decodes
//!   back to the value.
//! - `lenient`: bytes another encoder may write (other key order, wider integers, unknown keys or
//!   codes). The hex decodes to the value shown.
//! - `refused`: bytes the broker must refuse, with the error code it answers.
//!
//! A failing vector prints the block as it should read, so fixing the document is a copy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::de::{value::MapDeserializer, DeserializeOwned};
use serde::Deserialize;
use switchboard_proto::{
    encode_frame, BrokerCodec, BrokerFrame, ClientCodec, ClientFrame, CodecError, ErrorCode,
    ReceiptStatus, RejectReason, DEFAULT_MAX_FRAME,
};
use tokio_util::codec::Decoder;

const SPEC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md"));

/// The value behind every `vector` block, keyed by frame kind, exactly as `PROTOCOL.md` states it.
fn table() -> BTreeMap<String, Frame> {
    let alice_send_id = 1_700_000_000_000_001;
    let frames = [
        Frame::Client(ClientFrame::Hello {
            version: 1,
            client_id: "alice".into(),
            token: None,
            keepalive_secs: 30,
        }),
        Frame::Client(ClientFrame::Send {
            send_id: alice_send_id,
            to: "bob".into(),
            body: Bytes::from_static(b"hi bob"),
            ttl_ms: None,
            fresh: true,
        }),
        Frame::Client(ClientFrame::Ack { id: 42 }),
        Frame::Client(ClientFrame::Ping),
        Frame::Client(ClientFrame::Bye),
        Frame::Broker(BrokerFrame::Hi {
            version: 1,
            keepalive_secs: 30,
            address: "192.0.2.7:50312".into(),
            pending: 1,
            max_body_bytes: 1_048_360,
        }),
        Frame::Broker(BrokerFrame::Accepted {
            send_id: alice_send_id,
            message_id: 42,
        }),
        Frame::Broker(BrokerFrame::Rejected {
            send_id: alice_send_id + 1,
            reason: RejectReason::InvalidRecipient,
            text: "client id is empty".into(),
        }),
        Frame::Broker(BrokerFrame::Deliver {
            message_id: 42,
            from: "alice".into(),
            send_id: alice_send_id,
            sent_at_ms: 1_700_000_000_123,
            body: Bytes::from_static(b"hi bob"),
        }),
        Frame::Broker(BrokerFrame::Receipt {
            receipt_id: 43,
            send_id: alice_send_id,
            message_id: 42,
            to: "bob".into(),
            status: ReceiptStatus::Delivered,
        }),
        Frame::Broker(BrokerFrame::Pong),
        Frame::Broker(BrokerFrame::Error {
            code: ErrorCode::SessionTakenOver,
            text: "another connection logged in as alice".into(),
        }),
    ];
    frames.into_iter().map(|f| (f.kind(), f)).collect()
}

#[test]
fn every_frame_kind_has_exactly_one_vector() {
    let mut kinds = kinds_of::<ClientFrame>();
    kinds.extend(kinds_of::<BrokerFrame>());
    let kinds: BTreeSet<String> = kinds.into_iter().map(String::from).collect();

    let mut documented = BTreeSet::new();
    for block in blocks("vector") {
        let frame = block.get("frame");
        assert!(
            documented.insert(frame.to_string()),
            "{block}: a second vector for `{frame}`"
        );
    }
    let missing: Vec<_> = kinds.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&kinds).collect();
    assert!(
        missing.is_empty(),
        "PROTOCOL.md has no vector for {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "PROTOCOL.md has vectors for unknown frame kinds {unknown:?}"
    );

    let tabled: BTreeSet<String> = table().into_keys().collect();
    assert_eq!(
        tabled, kinds,
        "the table in this test must hold one value per frame kind"
    );
}

#[test]
fn vectors_encode_to_the_documented_bytes() {
    let table = table();
    let mut failures = Vec::new();
    for block in blocks("vector") {
        let Some(frame) = table.get(block.get("frame")) else {
            failures.push(format!(
                "{block}: the table in this test has no `{}`",
                block.get("frame")
            ));
            continue;
        };
        let bytes = frame.encode();
        if block.get("value") != frame.to_doc() || parse_hex(&block, block.get("hex")) != bytes {
            failures.push(format!(
                "{block} should read:\n```vector\nframe: {}\nvalue: {}\nhex: {}\n```",
                frame.kind(),
                frame.to_doc(),
                to_hex(&bytes)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn vectors_decode_to_the_documented_values() {
    let table = table();
    let mut failures = Vec::new();
    for block in blocks("vector") {
        let Some(expected) = table.get(block.get("frame")) else {
            failures.push(format!(
                "{block}: the table in this test has no `{}`",
                block.get("frame")
            ));
            continue;
        };
        let bytes = parse_hex(&block, block.get("hex"));
        match decode(expected.direction(), &bytes) {
            Ok(frame) if frame == *expected => {}
            other => failures.push(format!("{block}: decodes to {other:?}, not {expected:?}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn lenient_input_decodes_to_the_documented_values() {
    let mut failures = Vec::new();
    let lenient = blocks("lenient");
    assert!(!lenient.is_empty(), "PROTOCOL.md has no `lenient` blocks");
    for block in lenient {
        let value = block.get("value");
        let direction = Direction::of_doc_value(&block, value);
        let bytes = parse_hex(&block, block.get("hex"));
        match decode(direction, &bytes) {
            Ok(frame) if frame.to_doc() == value && frame.kind() == block.get("frame") => {}
            other => failures.push(format!("{block}: decodes to {other:?}, not {value}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn refused_input_is_refused_with_the_documented_error() {
    let refused = blocks("refused");
    let huge_prefix = refused.iter().any(|b| {
        parse_hex(b, b.get("hex")) == [0xff; 4]
            && b.get("error") == ErrorCode::FrameTooLarge.as_str()
    });
    assert!(
        huge_prefix,
        "PROTOCOL.md must refuse the length prefix ffffffff as frame-too-large"
    );

    let mut failures = Vec::new();
    for block in refused {
        let mut buf = BytesMut::from(&parse_hex(&block, block.get("hex"))[..]);
        let answer = match BrokerCodec::default().decode(&mut buf) {
            Err(CodecError::FrameTooLarge { .. }) => ErrorCode::FrameTooLarge.as_str(),
            Err(CodecError::Malformed(_)) => ErrorCode::BadFrame.as_str(),
            other => {
                failures.push(format!("{block}: not refused: {other:?}"));
                continue;
            }
        };
        if answer != block.get("error") {
            failures.push(format!(
                "{block}: refused as {answer}, not {}",
                block.get("error")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// A frame in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    Client(ClientFrame),
    Broker(BrokerFrame),
}

impl Frame {
    /// The value as `PROTOCOL.md` writes it: the enum's name and the frame's `Debug` form.
    fn to_doc(&self) -> String {
        match self {
            Frame::Client(f) => format!("ClientFrame::{f:?}"),
            Frame::Broker(f) => format!("BrokerFrame::{f:?}"),
        }
    }

    /// The complete frame, length prefix included.
    fn encode(&self) -> Vec<u8> {
        let bytes = match self {
            Frame::Client(f) => encode_frame(f, DEFAULT_MAX_FRAME),
            Frame::Broker(f) => encode_frame(f, DEFAULT_MAX_FRAME),
        };
        bytes.expect("every vector fits in a frame").to_vec()
    }

    /// The frame kind, read from the `type` key of the encoding so that it is the name on the wire.
    fn kind(&self) -> String {
        #[derive(Deserialize)]
        struct Tag {
            r#type: String,
        }
        let tag: Tag = rmp_serde::from_slice(&self.encode()[4..]).expect("a frame has a type");
        tag.r#type
    }

    fn direction(&self) -> Direction {
        match self {
            Frame::Client(_) => Direction::ToBroker,
            Frame::Broker(_) => Direction::ToClient,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    ToBroker,
    ToClient,
}

impl Direction {
    fn of_doc_value(block: &Block, value: &str) -> Self {
        if value.starts_with("ClientFrame::") {
            Direction::ToBroker
        } else if value.starts_with("BrokerFrame::") {
            Direction::ToClient
        } else {
            panic!("{block}: a value starts with ClientFrame:: or BrokerFrame::")
        }
    }
}

/// Decodes one complete frame with the codec of the side that receives it.
fn decode(direction: Direction, bytes: &[u8]) -> Result<Frame, String> {
    let mut buf = BytesMut::from(bytes);
    let frame = match direction {
        Direction::ToBroker => BrokerCodec::default()
            .decode(&mut buf)
            .map(|f| f.map(Frame::Client)),
        Direction::ToClient => ClientCodec::default()
            .decode(&mut buf)
            .map(|f| f.map(Frame::Broker)),
    };
    match frame {
        Ok(Some(frame)) if buf.is_empty() => Ok(frame),
        Ok(Some(_)) => Err(format!("{} bytes left over after the frame", buf.len())),
        Ok(None) => Err("an incomplete frame".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Every frame kind `F` decodes, as serde's derive lists them when it meets an unknown `type`. Asking
/// the enum rather than keeping a list here means a new frame kind fails the test until documented.
fn kinds_of<F: DeserializeOwned>() -> Vec<&'static str> {
    let probe = MapDeserializer::<_, Expected>::new(std::iter::once(("type", "")));
    match F::deserialize(probe) {
        Err(Expected(Some(kinds))) => kinds.to_vec(),
        other => panic!("serde did not list the frame kinds: {:?}", other.err()),
    }
}

/// A deserializer error that keeps the variant names serde expected.
#[derive(Debug)]
struct Expected(Option<&'static [&'static str]>);

impl serde::de::Error for Expected {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Expected(None)
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        Expected(Some(expected))
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected one of {:?}", self.0)
    }
}

impl std::error::Error for Expected {}

/// A fenced block of `PROTOCOL.md`: "```vector" and so on, then `key: value` lines.
struct Block {
    info: &'static str,
    /// 1-based line of the opening fence, for messages.
    line: usize,
    fields: BTreeMap<&'static str, &'static str>,
}

impl Block {
    fn get(&self, key: &str) -> &'static str {
        self.fields
            .get(key)
            .unwrap_or_else(|| panic!("{self}: no `{key}:` line"))
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PROTOCOL.md:{} ({} block)", self.line, self.info)
    }
}

/// Every block of kind `info` in `PROTOCOL.md`, checked to have exactly its kind's keys.
fn blocks(info: &'static str) -> Vec<Block> {
    let keys: &[&str] = match info {
        "vector" | "lenient" => &["frame", "hex", "value"],
        "refused" => &["error", "hex"],
        _ => unreachable!("no such block kind: {info}"),
    };
    let fence = format!("```{info}");
    let mut found = Vec::new();
    let mut lines = SPEC.lines().enumerate();
    while let Some((at, line)) = lines.next() {
        if line.trim_end() != fence {
            continue;
        }
        let mut block = Block {
            info,
            line: at + 1,
            fields: BTreeMap::new(),
        };
        for (_, line) in lines.by_ref().take_while(|(_, l)| l.trim_end() != "```") {
            let (key, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("{block}: `{line}` is not `key: value`"));
            let key = key.trim();
            assert!(keys.contains(&key), "{block}: unexpected key `{key}`");
            assert!(
                block.fields.insert(key, value.trim()).is_none(),
                "{block}: `{key}` twice"
            );
        }
        assert_eq!(
            block.fields.keys().copied().collect::<Vec<_>>(),
            keys,
            "{block}: wrong set of keys"
        );
        found.push(block);
    }
    found
}

/// Hex digits to bytes; white space between digits is ignored.
fn parse_hex(block: &Block, hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| {
            let d = c.to_digit(16);
            d.unwrap_or_else(|| panic!("{block}: `{c}` is not a hex digit")) as u8
        })
        .collect();
    assert!(
        digits.len().is_multiple_of(2),
        "{block}: odd number of hex digits"
    );
    digits
        .chunks(2)
        .map(|pair| pair[0] << 4 | pair[1])
        .collect()
}

/// The document's layout: the length prefix, a space, then the body.
fn to_hex(bytes: &[u8]) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!("{} {}", hex(&bytes[..4]), hex(&bytes[4..]))
}
