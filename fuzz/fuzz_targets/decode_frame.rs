//! Any bytes from the network, fed to both decoders in whatever pieces: no panic, no unbounded
//! allocation, and whatever decodes re-encodes to a frame that decodes to the same value.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard_proto::{BrokerCodec, ClientCodec};
use tokio_util::codec::{Decoder, Encoder};

/// Small enough that the fuzzer reaches the size check, large enough for real frames.
const MAX_FRAME: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the input is split, as TCP might.
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(data.len());

    let mut broker = BrokerCodec::new(MAX_FRAME);
    let mut buf = BytesMut::from(&data[..split]);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = broker.decode(&mut buf) {
        frames.push(frame);
    }
    buf.extend_from_slice(&data[split..]);
    while let Ok(Some(frame)) = broker.decode(&mut buf) {
        frames.push(frame);
    }
    for frame in frames {
        let mut wire = BytesMut::new();
        ClientCodec::new(MAX_FRAME)
            .encode(frame.clone(), &mut wire)
            .expect("a decoded frame re-encodes");
        let again = BrokerCodec::new(MAX_FRAME)
            .decode(&mut wire)
            .expect("re-encoded frame decodes")
            .expect("a whole frame");
        assert_eq!(again, frame);
    }

    let mut client = ClientCodec::new(MAX_FRAME);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = client.decode(&mut buf) {}
});
