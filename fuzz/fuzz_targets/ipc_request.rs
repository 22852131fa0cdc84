//! What a local client writes to the socket: line framing with its size cap, then the
//! JSON-RPC envelope, then the params of every method.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use mcp_authd_ipc::{FrameError, FrameReader, Incoming, audit, methods};

/// A small cap, so that oversized lines are reached often.
const LIMIT: usize = 256;

fuzz_target!(|data: &[u8]| {
    // An in-memory reader never waits: every poll is ready.
    let mut reader = FrameReader::with_limit(data, LIMIT);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        let next = match pin!(reader.next_frame()).poll(&mut cx) {
            Poll::Ready(next) => next,
            Poll::Pending => unreachable!("a byte slice never blocks"),
        };
        match next {
            Ok(Some(frame)) => {
                assert!(frame.len() <= LIMIT, "a frame over the cap");
                assert!(!frame.contains(&b'\n'), "a frame with a newline");
                parse(&frame);
            }
            Ok(None) | Err(FrameError::TooLarge) => break,
            Err(FrameError::Io(e)) => panic!("a byte slice cannot fail: {e}"),
        }
    }
    // The whole input as one frame too: the daemon's cap is far larger than LIMIT.
    parse(data);
});

fn parse(frame: &[u8]) {
    let Incoming::Request(request) = Incoming::parse(frame) else {
        return;
    };
    let params = request.params;
    // What methods/mod.rs does with the params of each method.
    let _ = serde_json::from_value::<methods::TokenGetParams>(params.clone());
    let _ = serde_json::from_value::<methods::ChallengeParams>(params.clone());
    let _ = serde_json::from_value::<methods::LoginParams>(params.clone());
    let _ = serde_json::from_value::<methods::GrantRef>(params.clone());
    let _ = serde_json::from_value::<methods::RevokeParams>(params.clone());
    let _ = serde_json::from_value::<audit::AuditParams>(params);
}
