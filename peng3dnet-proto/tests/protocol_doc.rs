//! The byte examples of `docs/PROTOCOL.md`, made by the library: each frame is built here
//! as a peer builds it, and the document must show exactly those bytes. A change to the
//! wire fails this test until the document follows (and a typo in the document fails it
//! too).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use peng3dnet_proto::config::RegistrySync;
use peng3dnet_proto::frame::{Frame, FrameCodec, FLAG_COMPRESSED};
use peng3dnet_proto::pong::{PingMessage, PingRequest, PingResponder, ServerTiming};
use peng3dnet_proto::protocol::{
    closeconn_frame, hello_frame, ping_body, settype_frame, ClientProtocol, ConnType, Event,
    ServerProtocol, ServerSetup,
};
use peng3dnet_proto::proxy::{parse, Version};
use peng3dnet_proto::value::{self, get, map, Value};
use peng3dnet_proto::wire::ids;
use peng3dnet_proto::{ClientId, CloseReason, Registry, Stats};

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A frame as the document writes it: length, id, flags and body in hex.
fn wire(frame: Frame) -> String {
    let w = FrameCodec::default().to_bytes(frame).unwrap();
    format!(
        "{} {} {} {}",
        hex(&w[..4]),
        hex(&w[4..8]),
        hex(&w[8..10]),
        hex(&w[10..])
    )
}

/// Asserts the document shows `example` (whitespace aside: long bodies are wrapped).
fn shown(what: &str, example: &str) {
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    assert!(
        squeeze(DOC).contains(&squeeze(example)),
        "docs/PROTOCOL.md does not show {what} as the code makes it:\n{example}"
    );
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register("chat:msg.say").unwrap();
    registry
}

#[test]
fn the_frames_of_a_ping_are_the_documents() {
    shown("the hello", &wire(hello_frame()));
    shown("the ping settype", &wire(settype_frame(&ConnType::Ping)));

    let mut ping = Vec::new();
    ping_body(&mut ping, &map([]), 1.5, 0);
    shown("the ping", &wire(Frame::new(ids::PING, ping.clone())));
    let mut with_data = Vec::new();
    ping_body(&mut with_data, &map([("x", 1.into())]), 1.5, 0);
    shown(
        "the ping with data",
        &wire(Frame::new(ids::PING, with_data)),
    );

    let responder = PingResponder::new().with_static_data(map([("name", "arena".into())]));
    let stats = Stats::default();
    let message = PingMessage::decode(ping, 64, 1000).unwrap();
    let peer = "127.0.0.1:5000".parse().unwrap();
    let request = PingRequest::new(&message, ClientId(1), peer, &stats);
    let read = SystemTime::UNIX_EPOCH + Duration::from_millis(1750);
    let timing = ServerTiming {
        received: read,
        sent: read + Duration::from_millis(250),
    };
    let pong = responder.encode_pong(&request, 64 << 10, timing);
    let pong_map = value::decode(&pong, 64).unwrap();
    assert_eq!(
        get(&pong_map, "servertiming"),
        Some(&map([
            ("recvtime", Value::F64(1.75)),
            ("sendtime", Value::F64(2.0))
        ]))
    );
    shown("the pong", &wire(Frame::new(ids::PONG, pong)));

    shown(
        "closeconn pingcomplete",
        &wire(closeconn_frame(Some(&CloseReason::PingComplete))),
    );
}

#[test]
fn the_closeconn_frames_are_the_documents() {
    shown("closeconn nil", &wire(closeconn_frame(None)));
    for reason in [
        CloseReason::TlsRequired,
        CloseReason::InternalError,
        CloseReason::ServerFull,
    ] {
        shown(reason.as_str(), &wire(closeconn_frame(Some(&reason))));
    }
    // Every reason the library names is in the document's table.
    for name in [
        "pingcomplete",
        "servershutdown",
        "protoversionmismatch",
        "unknownconntype",
        "packetregmismatch",
        "smartpacketinvalid",
        "invalidpingpacket",
        "pinginvalidside",
        "socketclose",
        "packettoolarge",
        "invalidpacket",
        "encryptionunsupported",
        "timeout",
        "serverfull",
        "sendqueuefull",
        "internalerror",
        "tlsrequired",
    ] {
        assert!(
            !matches!(CloseReason::from(name), CloseReason::Other(_)),
            "{name}"
        );
        assert!(
            DOC.contains(&format!("| `{name}` |")),
            "{name} not in the table"
        );
    }
}

#[test]
fn the_classic_handshake_is_the_documents() {
    let mut server = ServerProtocol::new(Arc::new(ServerSetup::new(Arc::new(registry()), [], 64)));
    let mut client =
        ClientProtocol::new(ConnType::Classic, registry(), RegistrySync::default(), 64);
    let settype = client.handle(hello_frame()).send.unwrap();
    shown("the classic settype", &wire(settype.clone()));
    let handshake = server.handle(settype).send.unwrap();
    shown("the handshake", &wire(handshake.clone()));
    let step = client.handle(handshake);
    assert_eq!(step.event, Some(Event::Established(ConnType::Classic)));
    let accept = step.send.unwrap();
    shown("the accept", &wire(accept.clone()));
    assert_eq!(
        server.handle(accept).event,
        Some(Event::Established(ConnType::Classic))
    );
}

#[test]
fn the_compressed_frame_is_the_documents() {
    let body = value::encode(&map([("pad", Value::from("a".repeat(9000)))]));
    assert_eq!(body.len(), 9008);
    let w = FrameCodec::default()
        .to_bytes(Frame::new(ids::PING, body))
        .unwrap();
    assert_eq!(w.len(), 55);
    assert_eq!(u16::from_be_bytes([w[8], w[9]]), FLAG_COMPRESSED);
    shown(
        "the compressed frame's start",
        &format!(
            "{} {} {} {}...",
            hex(&w[..4]),
            hex(&w[4..8]),
            hex(&w[8..10]),
            hex(&w[10..12])
        ),
    );
}

#[test]
fn the_proxy_headers_are_the_documents() {
    let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.2 51234 8080\r\n";
    shown(
        "the v1 header",
        "PROXY TCP4 192.0.2.7 10.0.0.2 51234 8080\\r\\n",
    );
    let v2_hex = "0d0a0d0a000d0a515549540a 21 11 000c c0000207 0a000002 c822 1f90";
    shown("the v2 header", v2_hex);
    let v2: Vec<u8> = {
        let digits: String = v2_hex.split_whitespace().collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect()
    };
    for (header, version, len) in [(&v1[..], Version::V1, 42), (&v2[..], Version::V2, 28)] {
        let parsed = parse(header).unwrap().unwrap();
        assert_eq!((parsed.version, parsed.len), (version, len));
        assert_eq!(parsed.source.unwrap().to_string(), "192.0.2.7:51234");
        assert_eq!(parsed.destination.unwrap().to_string(), "10.0.0.2:8080");
    }
}
