//! Frames built from arbitrary bytes, fed to ServerProtocol and ClientProtocol.
//!
//! Input: one control byte, then records `id selector (1) | body length (1) | body`.
//! The control byte may first drive each machine into a deeper state with valid packets
//! (settype ping/classic/custom, accept, hello), so the fuzzer reaches established
//! connections at once. Invariants checked: no panic; once a machine reports `Close` or
//! `PeerClosed` it is closed and ignores everything; `Established` is reported at most
//! once; a server only ever sends a handshake, a client only settype or accept.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use peng3dnet_proto::config::RegistrySync;
use peng3dnet_proto::frame::Frame;
use peng3dnet_proto::protocol::{
    hello_frame, ids, settype_frame, ClientProtocol, ClientState, ConnType, Event, ServerProtocol,
    ServerSetup, ServerState, Step,
};
use peng3dnet_proto::value::{encode, map};
use peng3dnet_proto::Registry;

const IDS: [u32; 12] = [0, 1, 2, 3, 4, 16, 63, 64, 65, 66, 200, u32::MAX];

fn registry() -> Registry {
    let mut r = Registry::new();
    let _ = r.register("fuzz:t.a");
    let _ = r.register("fuzz:t.b");
    r
}

fn frames(data: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut rest = data;
    while let [sel, len, tail @ ..] = rest {
        let id = IDS[usize::from(*sel) % IDS.len()];
        let id = if sel & 0x80 != 0 { u32::from(*sel) } else { id };
        let n = usize::from(*len).min(tail.len());
        out.push(Frame::new(id, tail[..n].to_vec()));
        rest = &tail[n..];
    }
    out
}

/// Tracks the invariants shared by both sides.
#[derive(Default)]
struct Watch {
    closed: bool,
    established: usize,
}

impl Watch {
    fn step(&mut self, step: &Step, allowed_sends: &[u32]) {
        if self.closed {
            assert_eq!(step, &Step::default(), "a closed machine must stay silent");
        }
        if let Some(frame) = &step.send {
            assert!(allowed_sends.contains(&frame.id), "sent id {}", frame.id);
        }
        match &step.event {
            Some(Event::Close(_) | Event::PeerClosed(_)) => self.closed = true,
            Some(Event::Established(_)) => self.established += 1,
            _ => {}
        }
        assert!(self.established <= 1, "established twice");
    }
}

fn run_server(control: u8, frames: &[Frame]) {
    let setup = Arc::new(ServerSetup::new(
        Arc::new(registry()),
        [ConnType::Ping, ConnType::Custom("fuzz".into())],
        64,
    ));
    let mut server = ServerProtocol::new(setup);
    let mut watch = Watch::default();
    let mut prelude = Vec::new();
    match control % 4 {
        1 => prelude.push(settype_frame(&ConnType::Ping)),
        2 => {
            prelude.push(settype_frame(&ConnType::Classic));
            prelude.push(Frame::new(
                ids::HANDSHAKE_ACCEPT,
                encode(&map([("success", true.into())])),
            ));
        }
        3 => prelude.push(settype_frame(&ConnType::Custom("fuzz".into()))),
        _ => {}
    }
    for frame in prelude.into_iter().chain(frames.iter().cloned()) {
        let step = server.handle(frame);
        watch.step(&step, &[ids::HANDSHAKE]);
        if watch.closed {
            assert_eq!(server.state(), &ServerState::Closed);
        }
    }
}

fn run_client(control: u8, frames: &[Frame]) {
    let conntype = match (control / 4) % 3 {
        0 => ConnType::Ping,
        1 => ConnType::Classic,
        _ => ConnType::Custom("fuzz".into()),
    };
    let mut client = ClientProtocol::new(conntype, registry(), RegistrySync::default(), 64);
    let mut watch = Watch::default();
    let prelude = if control & 0x10 != 0 {
        Some(hello_frame())
    } else {
        None
    };
    for frame in prelude.into_iter().chain(frames.iter().cloned()) {
        let step = client.handle(frame);
        watch.step(&step, &[ids::SETTYPE, ids::HANDSHAKE_ACCEPT]);
        if watch.closed {
            assert_eq!(client.state(), &ClientState::Closed);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let frames = frames(rest);
    run_server(control, &frames);
    run_client(control, &frames);
});
