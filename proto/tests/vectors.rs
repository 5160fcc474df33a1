//! The protocol's test vectors, kept in `vectors.json` beside this file and shown in `PROTOCOL.md`,
//! checked against this crate's encoder and decoders.
//!
//! `vectors.json` is the one copy every implementation's tests read (this file, and the Python
//! client's `python/tests/test_vectors.py`), so the implementations cannot drift apart; `PROTOCOL.md`
//! is what implementers in other languages read, so its blocks must show exactly that file. Three
//! kinds of vector are checked:
//! - `vectors`: exactly one per frame kind. The frame encodes to exactly the hex, and the hex decodes
//!   back to the frame.
//! - `lenient`: bytes another encoder may write (other key order, wider integers, unknown keys or
//!   codes). The hex decodes to the frame shown.
//! - `refused`: bytes the broker must refuse, with the error code it answers.
//!
//! A frame in the file is the map on the wire as JSON (a `bin` is `{"bin_hex": ...}`), read into this
//! crate's frame types with serde. A failing vector prints what it should read, so fixing the file or
//! the document is a copy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::BytesMut;
use serde::de::{value::MapDeserializer, DeserializeOwned};
use serde::Deserialize;
use switchboard_proto::datagram::{self, DatagramError, DatagramKey, Direction};
use switchboard_proto::{
    encode_frame, BrokerCodec, BrokerFrame, ClientCodec, ClientFrame, CodecError, ErrorCode,
    DEFAULT_MAX_FRAME,
};
use tokio_util::codec::Decoder;

const SPEC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md"));
const SHARED: &str = include_str!("vectors.json");

/// `vectors.json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Shared {
    #[allow(dead_code)]
    about: String,
    vectors: Vec<Entry>,
    lenient: Vec<Entry>,
    refused: Vec<Refused>,
    datagrams: Datagrams,
}

/// `vectors.json` `datagrams`: UDP datagrams under one session's key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Datagrams {
    #[allow(dead_code)]
    about: String,
    key_hex: String,
    session: u64,
    sealed: Vec<SealedVector>,
    refused: Vec<RefusedDatagram>,
}

/// A datagram as its sender seals it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedVector {
    about: String,
    from: Side,
    sequence: u64,
    /// The payload's frame; `None` for an empty payload.
    frame: Option<serde_json::Value>,
    hex: String,
}

/// Bytes a receiver drops, and the first check that fails.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefusedDatagram {
    about: String,
    hex: String,
    why: String,
}

/// A `vectors` or `lenient` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    #[allow(dead_code)]
    about: Option<String>,
    /// The frame kind, its `type` on the wire.
    name: String,
    /// Which side sends it, so which side decodes it.
    from: Side,
    hex: String,
    frame: serde_json::Value,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[serde(rename_all = "snake_case")]
enum Side {
    Client,
    Broker,
}

/// A `refused` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Refused {
    #[allow(dead_code)]
    about: String,
    hex: String,
    error: String,
}

fn shared() -> Shared {
    serde_json::from_str(SHARED).expect("vectors.json is the shape this test reads")
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vectors.json `{}` ({:?} frame)", self.name, self.from)
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vectors.json refused `{}`", self.hex)
    }
}

impl Entry {
    /// The frame as this crate's type, read from its JSON form.
    fn frame(&self) -> Frame {
        let wire = with_bins(self.frame.clone());
        let frame = match self.from {
            Side::Client => serde_json::from_value(wire).map(Frame::Client),
            Side::Broker => serde_json::from_value(wire).map(Frame::Broker),
        };
        frame.unwrap_or_else(|e| panic!("{self}: the frame does not read as one: {e}"))
    }

    fn bytes(&self) -> Vec<u8> {
        parse_hex(self, &self.hex)
    }
}

/// Every `{"bin_hex": ...}` as the array of bytes serde reads a `Bytes` from.
fn with_bins(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => match map.get("bin_hex").and_then(Value::as_str) {
            Some(hex) if map.len() == 1 => Value::Array(
                parse_hex(&"a bin_hex", hex)
                    .into_iter()
                    .map(Value::from)
                    .collect(),
            ),
            _ => Value::Object(map.into_iter().map(|(k, v)| (k, with_bins(v))).collect()),
        },
        other => other,
    }
}

#[test]
fn every_frame_kind_has_exactly_one_vector() {
    // Per side: `datagram` is a frame kind both ways.
    let side =
        |side, kinds: Vec<&'static str>| kinds.into_iter().map(move |k| (side, k.to_string()));
    let kinds: BTreeSet<(Side, String)> = side(Side::Client, kinds_of::<ClientFrame>())
        .chain(side(Side::Broker, kinds_of::<BrokerFrame>()))
        .collect();

    let mut documented = BTreeSet::new();
    for entry in shared().vectors {
        assert!(
            documented.insert((entry.from, entry.name.clone())),
            "{entry}: a second vector for `{}`",
            entry.name
        );
        assert_eq!(
            entry.frame().kind(),
            entry.name,
            "{entry}: the frame's type is not its name"
        );
    }
    let missing: Vec<_> = kinds.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&kinds).collect();
    assert!(
        missing.is_empty(),
        "vectors.json has no vector for {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "vectors.json has vectors for unknown frame kinds {unknown:?}"
    );
}

#[test]
fn vectors_encode_to_the_documented_bytes() {
    let mut failures = Vec::new();
    for entry in shared().vectors {
        let bytes = entry.frame().encode();
        if entry.bytes() != bytes {
            failures.push(format!(
                "{entry}: encodes to\n\"hex\": \"{}\"",
                to_hex(&bytes)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn vectors_decode_to_the_documented_values() {
    let mut failures = Vec::new();
    for entry in shared().vectors {
        let expected = entry.frame();
        match decode(entry.from, &entry.bytes()) {
            Ok(frame) if frame == expected => {}
            other => failures.push(format!("{entry}: decodes to {other:?}, not {expected:?}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn lenient_input_decodes_to_the_documented_values() {
    let mut failures = Vec::new();
    let lenient = shared().lenient;
    assert!(!lenient.is_empty(), "vectors.json has no `lenient` entries");
    for entry in lenient {
        let expected = entry.frame();
        match decode(entry.from, &entry.bytes()) {
            Ok(frame) if frame == expected && frame.kind() == entry.name => {}
            other => failures.push(format!("{entry}: decodes to {other:?}, not {expected:?}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn refused_input_is_refused_with_the_documented_error() {
    let refused = shared().refused;
    let huge_prefix = refused
        .iter()
        .any(|r| parse_hex(r, &r.hex) == [0xff; 4] && r.error == ErrorCode::FrameTooLarge.as_str());
    assert!(
        huge_prefix,
        "vectors.json must refuse the length prefix ffffffff as frame-too-large"
    );

    let mut failures = Vec::new();
    for entry in refused {
        let mut buf = BytesMut::from(&parse_hex(&entry, &entry.hex)[..]);
        let answer = match BrokerCodec::default().decode(&mut buf) {
            Err(CodecError::FrameTooLarge { .. }) => ErrorCode::FrameTooLarge.as_str(),
            Err(CodecError::Malformed(_)) => ErrorCode::BadFrame.as_str(),
            other => {
                failures.push(format!("{entry}: not refused: {other:?}"));
                continue;
            }
        };
        if answer != entry.error {
            failures.push(format!("{entry}: refused as {answer}, not {}", entry.error));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// `PROTOCOL.md` shows every vector of the shared file, in its order, and nothing else: for each,
/// the same frame kind and bytes, and the frame's value in Rust notation.
#[test]
fn protocol_md_shows_exactly_the_shared_vectors() {
    let shared = shared();
    let mut failures = Vec::new();
    for (info, entries) in [("vector", &shared.vectors), ("lenient", &shared.lenient)] {
        let blocks = blocks(info);
        if blocks.len() != entries.len() {
            failures.push(format!(
                "PROTOCOL.md has {} `{info}` blocks, vectors.json {} entries",
                blocks.len(),
                entries.len()
            ));
        }
        for (block, entry) in blocks.iter().zip(entries.iter()) {
            let frame = entry.frame();
            if block.get("frame") != entry.name
                || block.get("value") != frame.to_doc()
                || parse_hex(block, block.get("hex")) != entry.bytes()
            {
                failures.push(format!(
                    "{block} should read:\n```{info}\nframe: {}\nvalue: {}\nhex: {}\n```",
                    entry.name,
                    frame.to_doc(),
                    to_hex(&entry.bytes())
                ));
            }
        }
    }
    let blocks = blocks("refused");
    if blocks.len() != shared.refused.len() {
        failures.push(format!(
            "PROTOCOL.md has {} `refused` blocks, vectors.json {} entries",
            blocks.len(),
            shared.refused.len()
        ));
    }
    for (block, entry) in blocks.iter().zip(shared.refused.iter()) {
        if block.get("error") != entry.error
            || parse_hex(block, block.get("hex")) != parse_hex(entry, &entry.hex)
        {
            failures.push(format!(
                "{block} should read:\n```refused\nhex: {}\nerror: {}\n```",
                entry.hex, entry.error
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

fn datagram_key(datagrams: &Datagrams) -> DatagramKey {
    let bytes = parse_hex(&"key_hex", &datagrams.key_hex);
    DatagramKey::from_slice(&bytes).expect("key_hex is 32 bytes")
}

fn direction(from: Side) -> Direction {
    match from {
        Side::Client => Direction::ToBroker,
        Side::Broker => Direction::ToClient,
    }
}

/// Each sealed datagram is exactly what `seal` writes, and opens back to its header and frame.
#[test]
fn datagrams_seal_to_the_documented_bytes_and_open_back() {
    let datagrams = shared().datagrams;
    let key = datagram_key(&datagrams);
    for vector in &datagrams.sealed {
        let about = &vector.about;
        let payload = match &vector.frame {
            None => Vec::new(),
            Some(frame) => {
                let wire = with_bins(frame.clone());
                let frame = match vector.from {
                    Side::Client => serde_json::from_value(wire).map(Frame::Client),
                    Side::Broker => serde_json::from_value(wire).map(Frame::Broker),
                };
                frame.unwrap_or_else(|e| panic!("{about}: {e}")).encode()[4..].to_vec()
            }
        };
        let mut sealed = Vec::new();
        let dir = direction(vector.from);
        datagram::seal(
            &mut sealed,
            dir,
            datagrams.session,
            vector.sequence,
            &key,
            &payload,
        );
        assert_eq!(to_plain_hex(&sealed), vector.hex, "{about}");
        let opened = datagram::parse(&sealed).unwrap_or_else(|e| panic!("{about}: {e}"));
        assert!(opened.verify(&key), "{about}");
        assert_eq!(
            (
                opened.direction,
                opened.session,
                opened.sequence,
                opened.payload
            ),
            (dir, datagrams.session, vector.sequence, &payload[..]),
            "{about}"
        );
        assert!(
            SPEC.contains(&vector.hex),
            "PROTOCOL.md does not show {about}"
        );
    }
}

/// Each refused datagram fails exactly the check it names.
#[test]
fn refused_datagrams_fail_the_documented_check() {
    let datagrams = shared().datagrams;
    let key = datagram_key(&datagrams);
    for vector in &datagrams.refused {
        let bytes = parse_hex(&vector.about.as_str(), &vector.hex);
        let why = match datagram::parse(&bytes) {
            Err(DatagramError::Truncated(_)) => "truncated",
            Err(DatagramError::Direction(_)) => "direction",
            Err(DatagramError::ZeroSequence) => "zero-sequence",
            Ok(sealed) if !sealed.verify(&key) => "mac",
            Ok(_) => "nothing: it verifies",
        };
        assert_eq!(why, vector.why, "{}", vector.about);
        assert!(
            SPEC.contains(&vector.hex),
            "PROTOCOL.md does not show {}",
            vector.about
        );
    }
}

fn to_plain_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
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
}

/// Decodes one complete frame sent by `from` with the codec of the side that receives it.
fn decode(from: Side, bytes: &[u8]) -> Result<Frame, String> {
    let mut buf = BytesMut::from(bytes);
    let frame = match from {
        Side::Client => BrokerCodec::default()
            .decode(&mut buf)
            .map(|f| f.map(Frame::Client)),
        Side::Broker => ClientCodec::default()
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

/// Hex digits to bytes; white space between digits is ignored. `block` names the source in messages.
fn parse_hex(block: &dyn fmt::Display, hex: &str) -> Vec<u8> {
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
