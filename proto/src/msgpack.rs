//! How the decoder reads MessagePack: a cursor over one frame's bytes that reads exactly the types a
//! frame's fields may have, and skips whatever else another encoder put there.
//!
//! Strings and binaries are handed out as slices of the frame, and a body as a [`Bytes`] sharing the
//! frame's buffer, so reading a frame copies no body. Where serde's MessagePack reader takes a value,
//! this one takes the same value (integers of any width when they fit), with the exceptions
//! `decode/mod.rs` lists: text is `str` only and bodies `bin` only, as PROTOCOL.md says.

use bytes::Bytes;

use crate::decode::DecodeError;

/// Containers nested deeper than this inside an ignored value are refused (serde's reader allows
/// 1,024 levels; nothing a frame holds nests at all).
const MAX_DEPTH: u16 = 256;

/// A cursor over one frame's MessagePack bytes.
pub(crate) struct Reader<'a> {
    frame: &'a Bytes,
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(frame: &'a Bytes) -> Self {
        Reader { frame, at: 0 }
    }

    /// Where the cursor is, to come back to with [`Reader::seek`].
    pub(crate) fn position(&self) -> usize {
        self.at
    }

    pub(crate) fn seek(&mut self, at: usize) {
        self.at = at;
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let byte = *self.frame.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(byte)
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.frame
            .get(self.at)
            .copied()
            .ok_or(DecodeError::Truncated)
    }

    /// The next `len` bytes, as a range of the frame.
    fn take(&mut self, len: usize) -> Result<std::ops::Range<usize>, DecodeError> {
        let end = self.at.checked_add(len).ok_or(DecodeError::Truncated)?;
        if end > self.frame.len() {
            return Err(DecodeError::Truncated);
        }
        let range = self.at..end;
        self.at = end;
        Ok(range)
    }

    /// A big-endian unsigned integer of `len` (1, 2, 4 or 8) bytes.
    fn be(&mut self, len: usize) -> Result<u64, DecodeError> {
        let range = self.take(len)?;
        Ok(self.frame[range]
            .iter()
            .fold(0, |acc, &b| acc << 8 | u64::from(b)))
    }

    /// The length of a map, whose entries follow.
    pub(crate) fn map_len(&mut self) -> Result<usize, DecodeError> {
        let len = match self.byte()? {
            m @ 0x80..=0x8f => u64::from(m & 0x0f),
            0xde => self.be(2)?,
            0xdf => self.be(4)?,
            _ => return Err(DecodeError::NotAMap),
        };
        usize::try_from(len).map_err(|_| DecodeError::Truncated)
    }

    /// The length of the `str` (`binary` false) or `bin` (`binary` true) whose marker this is, if
    /// it is one. PROTOCOL.md gives every field one of the two types; the other is the wrong type.
    fn text_len(&mut self, marker: u8, binary: bool) -> Result<Option<usize>, DecodeError> {
        let len = match (marker, binary) {
            (m @ 0xa0..=0xbf, false) => u64::from(m & 0x1f),
            (0xd9, false) | (0xc4, true) => self.be(1)?,
            (0xda, false) | (0xc5, true) => self.be(2)?,
            (0xdb, false) | (0xc6, true) => self.be(4)?,
            _ => return Ok(None),
        };
        Ok(Some(
            usize::try_from(len).map_err(|_| DecodeError::Truncated)?,
        ))
    }

    /// A `str`, or with `binary` a `bin`, as a range of the frame.
    fn text_range(
        &mut self,
        field: &'static str,
        binary: bool,
    ) -> Result<std::ops::Range<usize>, DecodeError> {
        let marker = self.byte()?;
        match self.text_len(marker, binary)? {
            Some(len) => self.take(len),
            None => Err(DecodeError::WrongType {
                field,
                expected: if binary { "binary" } else { "a string" },
            }),
        }
    }

    /// A map key: a `str`, compared byte for byte with the field names.
    pub(crate) fn key(&mut self) -> Result<&'a [u8], DecodeError> {
        let range = self.text_range("a map key", false)?;
        Ok(&self.frame[range])
    }

    /// The bytes of a `str` (a code or the frame's `type`), not checked to be UTF-8.
    pub(crate) fn raw(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let range = self.text_range(field, false)?;
        Ok(&self.frame[range])
    }

    /// A `str` holding UTF-8.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let raw = self.raw(field)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// A `bin`, sharing the frame's buffer.
    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let range = self.text_range(field, true)?;
        Ok(self.frame.slice(range))
    }

    /// Whether every byte of the frame has been read.
    pub(crate) fn at_end(&self) -> bool {
        self.at >= self.frame.len()
    }

    /// A non-negative integer of any MessagePack width.
    pub(crate) fn uint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let wrong = DecodeError::WrongType {
            field,
            expected: "an unsigned integer",
        };
        let value = match self.byte()? {
            m @ 0x00..=0x7f => u64::from(m),
            0xcc => self.be(1)?,
            0xcd => self.be(2)?,
            0xce => self.be(4)?,
            0xcf => self.be(8)?,
            // Signed encodings of a non-negative value are that value.
            m @ 0xd0..=0xd3 => {
                let len = 1usize << (m - 0xd0);
                let raw = self.be(len)?;
                let bits = 64 - 8 * len as u32;
                let signed = ((raw << bits) as i64) >> bits;
                u64::try_from(signed).map_err(|_| wrong)?
            }
            _ => return Err(wrong),
        };
        Ok(value)
    }

    /// An unsigned integer that fits 32 bits.
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.uint(field)?).map_err(|_| DecodeError::WrongType {
            field,
            expected: "a 32-bit unsigned integer",
        })
    }

    /// An unsigned integer that fits 16 bits (a port).
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        u16::try_from(self.uint(field)?).map_err(|_| DecodeError::WrongType {
            field,
            expected: "a 16-bit unsigned integer",
        })
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.byte()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            _ => Err(DecodeError::WrongType {
                field,
                expected: "a boolean",
            }),
        }
    }

    /// Takes a `nil` if one comes next.
    pub(crate) fn nil(&mut self) -> Result<bool, DecodeError> {
        let nil = self.peek()? == 0xc0;
        if nil {
            self.at += 1;
        }
        Ok(nil)
    }

    /// Steps over one value of any type.
    pub(crate) fn skip(&mut self) -> Result<(), DecodeError> {
        self.skip_nested(MAX_DEPTH)
    }

    fn skip_nested(&mut self, depth: u16) -> Result<(), DecodeError> {
        let marker = self.byte()?;
        if let Some(len) = match self.text_len(marker, false)? {
            None => self.text_len(marker, true)?,
            len => len,
        } {
            self.take(len)?;
            return Ok(());
        }
        let (items, len) = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => return Ok(()),
            0xcc | 0xd0 => (0, 1),
            0xcd | 0xd1 => (0, 2),
            0xca | 0xce | 0xd2 => (0, 4),
            0xcb | 0xcf | 0xd3 => (0, 8),
            // fixext 1, 2, 4, 8, 16: a type byte and the data.
            m @ 0xd4..=0xd8 => (0, 1 + (1usize << (m - 0xd4))),
            0xc7 => (0, 1 + self.be(1)? as usize),
            0xc8 => (0, 1 + self.be(2)? as usize),
            0xc9 => (0, 1 + self.be(4)? as usize),
            m @ 0x90..=0x9f => (u64::from(m & 0x0f), 0),
            0xdc => (self.be(2)?, 0),
            0xdd => (self.be(4)?, 0),
            m @ 0x80..=0x8f => (2 * u64::from(m & 0x0f), 0),
            0xde => (2 * self.be(2)?, 0),
            0xdf => (2 * self.be(4)?, 0),
            _ => return Err(DecodeError::Reserved(marker)),
        };
        self.take(len)?;
        if items > 0 {
            let depth = depth.checked_sub(1).ok_or(DecodeError::TooDeep)?;
            for _ in 0..items {
                self.skip_nested(depth)?;
            }
        }
        Ok(())
    }
}
