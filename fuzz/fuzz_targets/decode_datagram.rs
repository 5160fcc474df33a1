//! Any bytes from a UDP socket, as the broker's listener and a client read them: cutting them into
//! header, payload and MAC never panics; under a fixed key, whatever verifies is re-sealed to the same
//! bytes, and its payload goes through the frame decoders without a panic. The replay window takes
//! the sequence numbers the input names without a panic and never takes one twice.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_proto::datagram::{parse, seal};
use switchboard_proto::{BrokerFrame, ClientFrame, DatagramKey, DecodeFrame, ReplayWindow};

fuzz_target!(|data: &[u8]| {
    let key = DatagramKey::new([0x5a; 32]);
    if let Ok(sealed) = parse(data) {
        if sealed.verify(&key) {
            let mut again = Vec::new();
            let (direction, session, sequence) =
                (sealed.direction, sealed.session, sealed.sequence);
            seal(
                &mut again,
                direction,
                session,
                sequence,
                &key,
                sealed.payload,
            );
            assert_eq!(again, data, "a verified datagram re-seals to its bytes");
        }
        let payload = Bytes::copy_from_slice(sealed.payload);
        let _ = ClientFrame::decode_frame(&payload);
        let _ = BrokerFrame::decode_frame(&payload);
    }
    let mut window = ReplayWindow::default();
    let mut taken = std::collections::HashSet::new();
    for chunk in data.chunks_exact(8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        // Small steps as well as huge ones, so the bitmap is exercised.
        let sequence = u64::from_le_bytes(word) % 512;
        if window.accept(sequence) {
            assert!(taken.insert(sequence), "sequence {sequence} taken twice");
        }
    }
});
