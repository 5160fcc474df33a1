//! The socket under a session, in its two halves: the [`reader`] turns bytes into client frames, the
//! [`writer`] turns broker frames into bytes and disconnects a peer that stops reading. Neither knows
//! the protocol beyond the codec; what a frame means is the session's business.

pub(crate) mod budget;
pub(crate) mod counted;
pub(crate) mod reader;
pub(crate) mod writer;

pub(crate) use budget::FrameBudget;
pub(crate) use counted::{Counted, Traffic};
pub(crate) use reader::{FrameReader, Heard, ReadError};
pub(crate) use writer::{SocketWriter, WriteError, WriterResult};
