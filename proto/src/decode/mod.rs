//! How one frame's bytes become a frame: the `type` key first, then the fields of that kind.
//!
//! serde's derive reads an internally tagged enum (`#[serde(tag = "type")]`) by first copying the whole
//! map into an intermediate tree, since the tag may come anywhere; that cost an allocation per key
//! and a copy of every body. This decoder finds `type` (the first key, as every encoder we know
//! writes it; otherwise it looks ahead), then reads the kind's fields straight from the frame, and
//! hands out the body as a slice of the read buffer.
//!
//! It accepts what PROTOCOL.md allows, as the serde derive did (the derive stays on the frames, and
//! the tests check the two against each other): keys in any order, unknown keys ignored, integers of
//! any width that fit, `nil` or absence for optional fields (a `hello` without `token`, a `send` with
//! `fresh: nil`). It refuses what serde refused: an unknown `type`, a missing or repeated field, a
//! value of the wrong type. Where serde let through forms PROTOCOL.md never allowed, this decoder
//! refuses them: a frame that is an array rather than a map, integer keys (serde's field numbers), an
//! integer `type` or code, `bin` where the document says `str` and `str` where it says `bin` (a
//! body written as an array of integers too), bytes after the map, and an ignored value nested over
//! 256 levels deep.

use bytes::Bytes;

use crate::msgpack::Reader;

/// Why the bytes of a frame are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the frame ends inside a value")]
    Truncated,
    #[error("a frame is a MessagePack map")]
    NotAMap,
    #[error("the byte {0:#04x} is not MessagePack")]
    Reserved(u8),
    #[error("a value is nested too deeply")]
    TooDeep,
    #[error("unknown frame type `{0}`")]
    UnknownType(String),
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("duplicate field `{0}`")]
    DuplicateField(&'static str),
    #[error("{field}: expected {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("{field}: not UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("bytes follow the frame's map")]
    TrailingBytes,
}

/// A frame type the codec can read: [`ClientFrame`] and [`BrokerFrame`].
pub trait DecodeFrame: Sized {
    /// Reads one frame from the bytes after its length prefix; a body shares `frame`'s buffer.
    fn decode_frame(frame: &Bytes) -> Result<Self, DecodeError>;
}

/// The frame `read` made of the map, if the map was the whole frame.
pub(super) fn whole<T>(r: &Reader<'_>, read: Result<T, DecodeError>) -> Result<T, DecodeError> {
    let frame = read?;
    if !r.at_end() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(frame)
}

/// A field the frame's kind has read once.
pub(super) fn put<T>(
    slot: &mut Option<T>,
    name: &'static str,
    value: T,
) -> Result<(), DecodeError> {
    if slot.replace(value).is_some() {
        return Err(DecodeError::DuplicateField(name));
    }
    Ok(())
}

pub(super) fn need<T>(slot: Option<T>, name: &'static str) -> Result<T, DecodeError> {
    slot.ok_or(DecodeError::MissingField(name))
}

/// The frame's `type`, and where its map's entries start, with the cursor back there.
pub(super) fn tag<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], usize), DecodeError> {
    let entries = r.map_len()?;
    let start = r.position();
    for _ in 0..entries {
        if r.key()? == b"type" {
            let tag = r.raw("type")?;
            r.seek(start);
            return Ok((tag, entries));
        }
        r.skip()?;
    }
    Err(DecodeError::MissingField("type"))
}

/// Walks the map's `entries`: `field` reads the value of each key it knows and says whether it
/// did; the rest, and the one `type` already read, are skipped.
pub(super) fn fields<'a>(
    r: &mut Reader<'a>,
    entries: usize,
    mut field: impl FnMut(&'a [u8], &mut Reader<'a>) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    let mut tags = 0;
    for _ in 0..entries {
        let key = r.key()?;
        if key == b"type" {
            tags += 1;
            if tags > 1 {
                return Err(DecodeError::DuplicateField("type"));
            }
        } else if field(key, r)? {
            continue;
        }
        r.skip()?;
    }
    Ok(())
}

/// An optional field: `nil` is absent.
pub(super) fn optional<T>(
    r: &mut Reader<'_>,
    read: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    if r.nil()? {
        return Ok(None);
    }
    read(r).map(Some)
}

/// An unknown frame kind, named as it came.
pub(super) fn unknown(tag: &[u8]) -> DecodeError {
    DecodeError::UnknownType(String::from_utf8_lossy(tag).into_owned())
}

/// The two fields of a `datagram` frame either way: the peer (`to` or `from`, named `peer`) and the
/// body.
pub(super) fn datagram(
    r: &mut Reader<'_>,
    entries: usize,
    peer: &'static str,
) -> Result<(String, Bytes), DecodeError> {
    let (mut name, mut body) = (None, None);
    fields(r, entries, |key, r| {
        if key == peer.as_bytes() {
            put(&mut name, peer, r.string(peer)?)?;
        } else if key == b"body" {
            put(&mut body, "body", r.bytes("body")?)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok((need(name, peer)?, need(body, "body")?))
}

mod broker;
mod client;
#[cfg(test)]
mod tests;
