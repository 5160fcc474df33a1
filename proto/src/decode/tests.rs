//! The decoder against the serde derive it replaced: every frame serde read, it reads the same; every
//! error serde gave, it gives; and the few forms it refuses where serde did not are the ones listed.

use bytes::Bytes;
use proptest::prelude::*;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{de::DeserializeOwned, Serialize, Serializer};

use super::{DecodeError, DecodeFrame};
use crate::frame::{BrokerFrame, ClientFrame};

/// A MessagePack value to build frames from, repeated keys and all.
#[derive(Debug, Clone)]
enum V {
    Nil,
    Bool(bool),
    U(u64),
    I(i64),
    F(f64),
    S(String),
    B(Vec<u8>),
    A(Vec<V>),
    M(Vec<(V, V)>),
}

impl Serialize for V {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            V::Nil => s.serialize_unit(),
            V::Bool(b) => s.serialize_bool(*b),
            V::U(u) => s.serialize_u64(*u),
            V::I(i) => s.serialize_i64(*i),
            V::F(f) => s.serialize_f64(*f),
            V::S(t) => s.serialize_str(t),
            V::B(b) => s.serialize_bytes(b),
            V::A(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                items.iter().try_for_each(|i| seq.serialize_element(i))?;
                seq.end()
            }
            V::M(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                entries
                    .iter()
                    .try_for_each(|(k, v)| map.serialize_entry(k, v))?;
                map.end()
            }
        }
    }
}

fn s(text: &str) -> V {
    V::S(text.into())
}

fn map(entries: &[(&str, V)]) -> Bytes {
    let m = V::M(entries.iter().map(|(k, v)| (s(k), v.clone())).collect());
    Bytes::from(rmp_serde::to_vec(&m).unwrap())
}

/// Both decoders on `bytes`; the new one must never accept what serde refused, nor read a frame
/// differently. Returns the new decoder's result.
fn both<F>(bytes: &Bytes) -> Result<F, DecodeError>
where
    F: DecodeFrame + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let new = F::decode_frame(bytes);
    let old = rmp_serde::from_slice::<F>(bytes);
    match (&new, &old) {
        (Ok(new), Ok(old)) => assert_eq!(new, old, "{bytes:02x?}"),
        (Ok(new), Err(e)) => panic!("{bytes:02x?}: serde refused ({e}) what now reads as {new:?}"),
        _ => {}
    }
    new
}

fn send_with(extra: &[(&str, V)]) -> Bytes {
    let mut entries = vec![
        ("type", s("send")),
        ("id", V::U(7)),
        ("to", s("bob")),
        ("body", V::B(b"hi".to_vec())),
    ];
    entries.extend(extra.iter().cloned());
    map(&entries)
}

#[test]
fn what_serde_refused_is_refused() {
    use DecodeError::*;
    let cases: Vec<(Bytes, DecodeError)> = vec![
        (map(&[("type", s("shout"))]), UnknownType("shout".into())),
        (map(&[("id", V::U(1))]), MissingField("type")),
        (map(&[("type", s("ack"))]), MissingField("id")),
        (
            map(&[("type", s("send")), ("id", V::U(1)), ("to", s("bob"))]),
            MissingField("body"),
        ),
        (
            map(&[("type", s("ack")), ("id", V::U(1)), ("type", s("ack"))]),
            DuplicateField("type"),
        ),
        (send_with(&[("to", s("carol"))]), DuplicateField("to")),
        (
            send_with(&[("ttl_ms", V::Nil), ("ttl_ms", V::Nil)]),
            DuplicateField("ttl_ms"),
        ),
        (
            map(&[("type", s("ack")), ("id", V::I(-1))]),
            WrongType {
                field: "id",
                expected: "an unsigned integer",
            },
        ),
        (
            map(&[("type", s("ack")), ("id", V::F(42.0))]),
            WrongType {
                field: "id",
                expected: "an unsigned integer",
            },
        ),
        (
            map(&[("type", s("ack")), ("id", s("42"))]),
            WrongType {
                field: "id",
                expected: "an unsigned integer",
            },
        ),
        (
            map(&[("type", s("ack")), ("id", V::Nil)]),
            WrongType {
                field: "id",
                expected: "an unsigned integer",
            },
        ),
        (
            send_with(&[("fresh", V::U(1))]),
            WrongType {
                field: "fresh",
                expected: "a boolean",
            },
        ),
        (
            map(&[
                ("type", s("send")),
                ("id", V::U(1)),
                ("to", V::U(1)),
                ("body", V::B(vec![])),
            ]),
            WrongType {
                field: "to",
                expected: "a string",
            },
        ),
        (
            // A `str` holding the byte 0xff, which is not UTF-8.
            Bytes::from_static(b"\x84\xa4type\xa4send\xa2id\x01\xa2to\xa1\xff\xa4body\xc4\x00"),
            InvalidUtf8 { field: "to" },
        ),
        (
            map(&[
                ("type", s("hello")),
                ("version", V::U(u64::from(u32::MAX) + 1)),
                ("client_id", s("a")),
                ("keepalive_secs", V::U(1)),
            ]),
            WrongType {
                field: "version",
                expected: "a 32-bit unsigned integer",
            },
        ),
        (
            map(&[("type", V::U(2))]),
            WrongType {
                field: "type",
                expected: "a string",
            },
        ),
        (Bytes::from_static(b"\xc1"), NotAMap),
        (Bytes::from_static(b"\x82\xa4type\xa3ack\xa2id"), Truncated),
        (
            Bytes::from_static(b"\x83\xa4type\xa4ping\xa1x\xc1"),
            Reserved(0xc1),
        ),
    ];
    for (bytes, error) in cases {
        assert_eq!(both::<ClientFrame>(&bytes), Err(error), "{bytes:02x?}");
        assert!(
            rmp_serde::from_slice::<ClientFrame>(&bytes).is_err(),
            "{bytes:02x?}"
        );
    }
    let bad_code = map(&[("type", s("error")), ("code", V::Nil), ("text", s(""))]);
    assert!(matches!(
        both::<BrokerFrame>(&bad_code),
        Err(WrongType { field: "code", .. })
    ));
}

#[test]
fn what_serde_read_reads_the_same() {
    let ok: Vec<Bytes> = vec![
        // Any width and the signed forms of a non-negative integer.
        Bytes::from_static(b"\x82\xa4type\xa3ack\xa2id\xcd\x00\x2a"),
        Bytes::from_static(b"\x82\xa4type\xa3ack\xa2id\xd0\x2a"),
        Bytes::from_static(b"\x82\xa2id\xd3\x00\x00\x00\x00\x00\x00\x00\x2a\xa4type\xa3ack"),
        // `nil` for an optional field, unknown keys of any kind.
        send_with(&[("ttl_ms", V::Nil), ("fresh", V::Nil)]),
        send_with(&[
            ("ttl_ms", V::Nil),
            ("fresh", V::Bool(true)),
            ("x", V::A(vec![V::M(vec![(V::U(1), V::F(1.5))])])),
        ]),
        Bytes::from_static(b"\x83\xa4type\xa4ping\xa1x\xd6\x01abcd\xa1y\xc7\x02\x05ab"),
    ];
    for bytes in ok {
        assert!(both::<ClientFrame>(&bytes).is_ok(), "{bytes:02x?}");
    }
    let future = map(&[
        ("type", s("receipt")),
        ("receipt_id", V::U(1)),
        ("id", V::U(2)),
        ("message_id", V::U(3)),
        ("to", s("bob")),
        ("status", s("lost-in-space")),
    ]);
    assert!(both::<BrokerFrame>(&future).is_ok());
}

#[test]
fn forms_protocol_md_never_allowed_are_refused_now() {
    // serde read a frame as an array, the tag first, and integer keys as field numbers.
    let array = Bytes::from(rmp_serde::to_vec(&V::A(vec![s("ack"), V::U(42)])).unwrap());
    assert!(rmp_serde::from_slice::<ClientFrame>(&array).is_ok());
    assert_eq!(ClientFrame::decode_frame(&array), Err(DecodeError::NotAMap));
    let numbered = Bytes::from(
        rmp_serde::to_vec(&V::M(vec![(s("type"), s("ack")), (V::U(0), V::U(42))])).unwrap(),
    );
    assert!(rmp_serde::from_slice::<ClientFrame>(&numbered).is_ok());
    assert!(ClientFrame::decode_frame(&numbered).is_err());
    // serde ignored bytes after the map, and took `bin` for `str` and `str` for `bin`.
    let refused_now = [
        (
            Bytes::from_static(b"\x81\xa4type\xa4ping\xff\xff"),
            DecodeError::TrailingBytes,
        ),
        (
            Bytes::from_static(b"\x82\xc4\x04type\xc4\x03ack\xc4\x02id\x01"),
            DecodeError::WrongType {
                field: "a map key",
                expected: "a string",
            },
        ),
        (
            map(&[
                ("type", s("send")),
                ("id", V::U(1)),
                ("to", s("bob")),
                ("body", s("text")),
            ]),
            DecodeError::WrongType {
                field: "body",
                expected: "binary",
            },
        ),
    ];
    for (bytes, error) in refused_now {
        assert!(
            rmp_serde::from_slice::<ClientFrame>(&bytes).is_ok(),
            "{bytes:02x?}"
        );
        assert_eq!(
            ClientFrame::decode_frame(&bytes),
            Err(error),
            "{bytes:02x?}"
        );
    }
    let bin_to = map(&[
        ("type", s("send")),
        ("id", V::U(1)),
        ("to", V::B(b"bob".to_vec())),
        ("body", V::B(b"x".to_vec())),
    ]);
    assert!(rmp_serde::from_slice::<ClientFrame>(&bin_to).is_ok());
    assert_eq!(
        ClientFrame::decode_frame(&bin_to),
        Err(DecodeError::WrongType {
            field: "to",
            expected: "a string",
        })
    );
}

#[test]
fn a_body_is_a_slice_of_the_frame_not_a_copy() {
    let frame = send_with(&[]);
    let Ok(ClientFrame::Send { body, .. }) = ClientFrame::decode_frame(&frame) else {
        panic!("a send");
    };
    let inside = frame.as_ptr_range();
    assert!(
        inside.contains(&body.as_ptr()),
        "the body points into the frame"
    );
}

/// A frame value from the pieces proptest picks.
fn any_value() -> impl Strategy<Value = V> {
    let leaf = prop_oneof![
        Just(V::Nil),
        any::<bool>().prop_map(V::Bool),
        prop_oneof![0..300u64, any::<u64>()].prop_map(V::U),
        (-300..300i64).prop_map(V::I),
        Just(V::F(42.0)),
        prop_oneof![Just("bob".to_string()), Just("x".repeat(40)), "\\PC{0,8}"].prop_map(V::S),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(V::B),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(V::A),
            proptest::collection::vec((inner.clone(), inner), 0..3).prop_map(V::M),
        ]
    })
}

const KEYS: &[&str] = &[
    "type",
    "id",
    "to",
    "body",
    "ttl_ms",
    "fresh",
    "version",
    "client_id",
    "token",
    "keepalive_secs",
    "address",
    "pending",
    "max_body_bytes",
    "message_id",
    "from",
    "send_id",
    "sent_at_ms",
    "receipt_id",
    "status",
    "reason",
    "code",
    "text",
    "other",
];
const KINDS: &[&str] = &[
    "hello", "send", "ack", "ping", "bye", "hi", "accepted", "rejected", "deliver", "receipt",
    "pong", "error", "shout",
];

fn any_frame() -> impl Strategy<Value = Bytes> {
    let entry = (proptest::sample::select(KEYS), any_value());
    (
        proptest::sample::select(KINDS),
        0..3usize,
        proptest::collection::vec(entry, 0..8),
    )
        .prop_map(|(kind, at, mut entries)| {
            entries.insert(at.min(entries.len()), ("type", s(kind)));
            map(&entries)
        })
}

proptest! {
    #[test]
    fn random_maps_decode_as_serde_did(frame in any_frame()) {
        let _ = both::<ClientFrame>(&frame);
        let _ = both::<BrokerFrame>(&frame);
    }

    #[test]
    fn every_prefix_and_flipped_byte_is_judged_as_serde_did(frame in any_frame(), at in any::<usize>(), byte in any::<u8>()) {
        let cut = frame.slice(..at % (frame.len() + 1));
        let _ = both::<ClientFrame>(&cut);
        let mut flipped = frame.to_vec();
        let at = at % flipped.len();
        flipped[at] = byte;
        let _ = both::<ClientFrame>(&Bytes::from(flipped));
    }
}
