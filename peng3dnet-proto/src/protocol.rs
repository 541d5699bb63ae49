//! The connection state machine: hello, settype, handshake, accept and closeconn, sans I/O.
//!
//! [`ServerProtocol`] and [`ClientProtocol`] take decoded [`Frame`]s and say what to do
//! next ([`Step`]): a frame to send and/or an [`Event`] for the layer above. They own no
//! socket and no clock, so every rule of the protocol is tested here without a network;
//! `server/`, `client.rs` and `ping/` only move bytes and time.
//!
//! Rules (docs/PROTOCOL.md, "Classic connection" and "Ping connection"):
//! - client: hello with another `protoversion` closes with `protoversionmismatch`; a
//!   different `version` string is fine. It then sends settype and starts its type.
//! - server: settype with an unknown type closes with `unknownconntype`; a missing
//!   `conntype` means `classic`; classic answers with the handshake and registry.
//! - client: on handshake, checks `protoversion` again, syncs the registry (mismatch with
//!   action `closeconnection` closes with `packetregmismatch`), sends accept.
//! - handshake or accept in the wrong state (or at the wrong side) closes with
//!   `smartpacketinvalid`; other protocol packets in the wrong state are ignored.
//! - ping connections only carry ids 64 (ping, client to server) and 65 (pong, server to
//!   client): another id closes with `invalidpingpacket`, one at the wrong side with
//!   `pinginvalidside`.
//! - closeconn is accepted in every state.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;

use crate::config::{Limits, RegistrySync};
use crate::frame::Frame;
use crate::pong::{PingMessage, PongMessage};
use crate::registry::Registry;
use crate::value::{self, get, map, Value};

pub use crate::close::CloseReason;

pub use crate::wire::{ids, PROTOVERSION, RELEASE, VERSION};

/// A connection type, chosen by the client with settype.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConnType {
    /// `classic`: registry handshake, then application packets.
    Classic,
    /// `ping`: one-off data retrieval, ids 64 and 65 only.
    Ping,
    /// A type an application registered on both sides: after settype, every frame of id
    /// 64 and up goes to the application unchanged, with no registry handshake.
    Custom(String),
}

impl ConnType {
    /// The name sent in settype.
    pub fn as_str(&self) -> &str {
        match self {
            ConnType::Classic => "classic",
            ConnType::Ping => "ping",
            ConnType::Custom(name) => name,
        }
    }

    /// The type of a settype name.
    pub fn from_name(name: &str) -> Self {
        match name {
            "classic" => ConnType::Classic,
            "ping" => ConnType::Ping,
            other => ConnType::Custom(other.to_owned()),
        }
    }
}

impl fmt::Display for ConnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An application packet received on an established connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// Wire id (64 and up).
    pub id: u32,
    /// Registered name, on classic connections; `None` on custom types.
    pub name: Option<String>,
    /// Decoded body.
    pub body: Value,
}

/// What the layer above must learn from a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The connection is established with this type: handshake complete (classic) or
    /// type set (ping, custom).
    Established(ConnType),
    /// An application packet.
    Packet(Packet),
    /// A ping (server side): answer it with a pong. Checked, not decoded: see
    /// [`PingMessage`].
    Ping(PingMessage),
    /// A pong (client side). Checked, not decoded: see [`PongMessage`].
    Pong(PongMessage),
    /// The protocol was broken: send closeconn with this reason and close.
    Close(CloseReason),
    /// The peer sent closeconn (with its reason, if any): close our side.
    PeerClosed(Option<CloseReason>),
}

/// The result of handling one frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    /// A frame to send first.
    pub send: Option<Frame>,
    /// Something for the layer above.
    pub event: Option<Event>,
}

impl Step {
    fn nothing() -> Self {
        Step::default()
    }
    fn event(event: Event) -> Self {
        Step {
            send: None,
            event: Some(event),
        }
    }
    fn close(reason: CloseReason) -> Self {
        Step::event(Event::Close(reason))
    }
}

static HELLO_BODY: LazyLock<Bytes> = LazyLock::new(|| {
    value::encode(&map([
        ("version", VERSION.into()),
        ("protoversion", PROTOVERSION.into()),
    ]))
});

/// The hello frame a server sends first.
pub fn hello_frame() -> Frame {
    Frame::new(ids::HELLO, HELLO_BODY.clone())
}

/// The body of closeconn with `pingcomplete`, encoded once: every ping client sends it.
static CLOSECONN_PINGCOMPLETE_BODY: LazyLock<Bytes> = LazyLock::new(|| {
    value::encode(&map([(
        "reason",
        CloseReason::PingComplete.as_str().into(),
    )]))
});

/// A closeconn frame; `None` sends a nil reason.
pub fn closeconn_frame(reason: Option<&CloseReason>) -> Frame {
    if reason == Some(&CloseReason::PingComplete) {
        return Frame::new(ids::CLOSECONN, CLOSECONN_PINGCOMPLETE_BODY.clone());
    }
    let reason = reason.map_or(Value::Nil, |r| Value::from(r.as_str()));
    Frame::new(ids::CLOSECONN, value::encode(&map([("reason", reason)])))
}

/// The body of `settype` for a ping connection, encoded once: every ping client sends it.
static SETTYPE_PING_BODY: LazyLock<Bytes> =
    LazyLock::new(|| value::encode(&map([("conntype", ConnType::Ping.as_str().into())])));

/// A settype frame for a connection type.
pub fn settype_frame(conntype: &ConnType) -> Frame {
    if *conntype == ConnType::Ping {
        return Frame::new(ids::SETTYPE, SETTYPE_PING_BODY.clone());
    }
    Frame::new(
        ids::SETTYPE,
        value::encode(&map([("conntype", conntype.as_str().into())])),
    )
}

/// Appends the body of a ping to `out`, encoded straight from the caller's `data` without
/// copying it: the entries of `data` (a map; anything else counts as an empty map) with
/// `time` and `seq` set, as the seed's client sends them. A key `data` already has keeps
/// its place with the new value (the first such entry, as a Python dict's update of it
/// would); a key it lacks is appended, `time` before `seq`. The bytes are those of the
/// map built that way and then encoded.
///
/// ```
/// use peng3dnet_proto::protocol::ping_body;
/// use peng3dnet_proto::value::{encode, map, Value};
///
/// let data = map([("seq", Value::from(7)), ("x", Value::from(1))]);
/// let mut body = Vec::new();
/// ping_body(&mut body, &data, 1.5, 2);
/// let built = map([("seq", Value::from(2)), ("x", Value::from(1)), ("time", Value::F64(1.5))]);
/// assert_eq!(body, encode(&built).to_vec());
/// ```
pub fn ping_body(out: &mut Vec<u8>, data: &Value, time: f64, seq: u64) {
    let entries: &[(Value, Value)] = data.as_map().map_or(&[], Vec::as_slice);
    let first = |key: &str| entries.iter().position(|(k, _)| k.as_str() == Some(key));
    let (time_at, seq_at) = (first("time"), first("seq"));
    let len = entries.len() + usize::from(time_at.is_none()) + usize::from(seq_at.is_none());
    value::write_map_header(out, u32::try_from(len).unwrap_or(u32::MAX));
    let time = Value::F64(time);
    let seq = Value::from(seq);
    for (i, (k, v)) in entries.iter().enumerate() {
        value::encode_into(out, k);
        let v = if Some(i) == time_at {
            &time
        } else if Some(i) == seq_at {
            &seq
        } else {
            v
        };
        value::encode_into(out, v);
    }
    for (key, at, v) in [("time", time_at, &time), ("seq", seq_at, &seq)] {
        if at.is_none() {
            value::write_str_header(out, key.len());
            out.extend_from_slice(key.as_bytes());
            value::encode_into(out, v);
        }
    }
}

fn decode(frame: &Frame, max_depth: usize, max_items: usize) -> Result<Value, CloseReason> {
    value::decode_bounded(&frame.body, max_depth, max_items).map_err(|e| e.close_reason())
}

fn peer_closed(body: &Value) -> Step {
    let reason = match get(body, "reason") {
        Some(Value::String(s)) => s.as_str().map(CloseReason::from),
        _ => None,
    };
    Step::event(Event::PeerClosed(reason))
}

fn protoversion_ok(body: &Value) -> bool {
    get(body, "protoversion").and_then(Value::as_u64) == Some(PROTOVERSION)
}

/// What a server offers, shared by all its connections.
#[derive(Debug)]
pub struct ServerSetup {
    /// Registry sent in the handshake and used to name classic packets.
    registry: Arc<Registry>,
    /// Encoded handshake body, built once.
    handshake_body: Bytes,
    /// Connection types offered: `classic` always, `ping` on pingable servers, custom ones.
    conntypes: HashSet<ConnType>,
    /// Deepest msgpack nesting accepted.
    max_depth: usize,
    /// Most msgpack values one body may hold.
    max_items: usize,
}

impl ServerSetup {
    /// A setup offering `classic` plus the given types.
    pub fn new(
        registry: Arc<Registry>,
        extra_types: impl IntoIterator<Item = ConnType>,
        max_depth: usize,
    ) -> Self {
        let handshake_body = value::encode(&map([
            ("version", VERSION.into()),
            ("protoversion", PROTOVERSION.into()),
            ("registry", registry.to_value()),
        ]));
        let mut conntypes: HashSet<ConnType> = extra_types.into_iter().collect();
        conntypes.insert(ConnType::Classic);
        ServerSetup {
            registry,
            handshake_body,
            conntypes,
            max_depth,
            max_items: Limits::default().max_items,
        }
    }

    /// Refuses bodies holding more than `max_items` msgpack values with `packettoolarge`
    /// (default: [`Limits::max_items`]).
    pub fn with_max_items(mut self, max_items: usize) -> Self {
        self.max_items = max_items;
        self
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Whether a connection type is offered.
    pub fn offers(&self, conntype: &ConnType) -> bool {
        self.conntypes.contains(conntype)
    }
}

/// States of a server-side connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerState {
    /// Hello sent, waiting for settype.
    AwaitSetType,
    /// Classic handshake sent, waiting for accept.
    AwaitAccept,
    /// Established with this type.
    Established(ConnType),
    /// Closed: every further frame is ignored.
    Closed,
}

/// The server side of one connection.
#[derive(Debug)]
pub struct ServerProtocol {
    /// What the server offers.
    setup: Arc<ServerSetup>,
    /// Where the connection is.
    state: ServerState,
}

impl ServerProtocol {
    /// A new connection; the caller sends [`hello_frame`] first.
    pub fn new(setup: Arc<ServerSetup>) -> Self {
        ServerProtocol {
            setup,
            state: ServerState::AwaitSetType,
        }
    }

    /// The current state.
    pub fn state(&self) -> &ServerState {
        &self.state
    }

    /// The established connection type, if any.
    pub fn conntype(&self) -> Option<&ConnType> {
        match &self.state {
            ServerState::Established(t) => Some(t),
            _ => None,
        }
    }

    /// Marks the connection closed (after we sent or got closeconn).
    pub fn close(&mut self) {
        self.state = ServerState::Closed;
    }

    /// Handles one received frame.
    pub fn handle(&mut self, frame: Frame) -> Step {
        if self.state == ServerState::Closed {
            return Step::nothing();
        }
        if frame.id == ids::PING && self.state == ServerState::Established(ConnType::Ping) {
            return self.on_ping(frame);
        }
        let body = match decode(&frame, self.setup.max_depth, self.setup.max_items) {
            Ok(body) => body,
            Err(reason) => return self.closing(Step::close(reason)),
        };
        let step = match (frame.id, &self.state) {
            (ids::CLOSECONN, _) => peer_closed(&body),
            (ids::SETTYPE, ServerState::AwaitSetType) => self.on_settype(&body),
            (ids::HANDSHAKE_ACCEPT, ServerState::AwaitAccept) => {
                if get(&body, "success").and_then(Value::as_bool) == Some(true) {
                    self.state = ServerState::Established(ConnType::Classic);
                    Step::event(Event::Established(ConnType::Classic))
                } else {
                    Step::nothing()
                }
            }
            (ids::HANDSHAKE_ACCEPT | ids::HANDSHAKE, _) => {
                Step::close(CloseReason::SmartPacketInvalid)
            }
            (id, ServerState::Established(ConnType::Ping)) if id >= 64 => match id {
                ids::PONG => Step::close(CloseReason::PingInvalidSide),
                _ => Step::close(CloseReason::InvalidPingPacket),
            },
            (id, ServerState::Established(ConnType::Classic)) if id >= 64 => {
                match self.setup.registry.name(id) {
                    Some(name) => Step::event(Event::Packet(Packet {
                        id,
                        name: Some(name.to_owned()),
                        body,
                    })),
                    None => Step::nothing(),
                }
            }
            (id, ServerState::Established(ConnType::Custom(_))) if id >= 64 => {
                Step::event(Event::Packet(Packet {
                    id,
                    name: None,
                    body,
                }))
            }
            _ => Step::nothing(),
        };
        self.closing(step)
    }

    /// A ping on a ping connection: its body is checked as every body is, but not
    /// decoded (the pong echoes its bytes; a data provider may decode it).
    fn on_ping(&mut self, frame: Frame) -> Step {
        let (max_depth, max_items) = (self.setup.max_depth, self.setup.max_items);
        match value::validate(&frame.body, max_depth, max_items) {
            Ok(()) => Step::event(Event::Ping(PingMessage::checked(frame.body, max_depth))),
            Err(e) => self.closing(Step::close(e.close_reason())),
        }
    }

    fn closing(&mut self, step: Step) -> Step {
        if matches!(step.event, Some(Event::Close(_) | Event::PeerClosed(_))) {
            self.state = ServerState::Closed;
        }
        step
    }

    fn on_settype(&mut self, body: &Value) -> Step {
        let conntype = match get(body, "conntype") {
            None | Some(Value::Nil) => ConnType::Classic,
            Some(v) => match v.as_str() {
                Some(name) => ConnType::from_name(name),
                None => return Step::close(CloseReason::InvalidPacket),
            },
        };
        if !body.is_map() {
            return Step::close(CloseReason::InvalidPacket);
        }
        if !self.setup.offers(&conntype) {
            return Step::close(CloseReason::UnknownConnType);
        }
        if conntype == ConnType::Classic {
            self.state = ServerState::AwaitAccept;
            return Step {
                send: Some(Frame::new(
                    ids::HANDSHAKE,
                    self.setup.handshake_body.clone(),
                )),
                event: None,
            };
        }
        self.state = ServerState::Established(conntype.clone());
        Step::event(Event::Established(conntype))
    }
}

/// States of a client-side connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientState {
    /// Connected, waiting for hello.
    AwaitHello,
    /// Settype classic sent, waiting for the handshake.
    AwaitHandshake,
    /// Established.
    Established,
    /// Closed: every further frame is ignored.
    Closed,
}

/// The client side of one connection.
#[derive(Debug)]
pub struct ClientProtocol {
    /// The type this client asks for.
    conntype: ConnType,
    /// Our registry, re-mapped to the server's ids on a classic handshake (copied then,
    /// if shared: a ping connection shares one registry with every other).
    registry: Arc<Registry>,
    /// How to sync the registry.
    sync: RegistrySync,
    /// Deepest msgpack nesting accepted.
    max_depth: usize,
    /// Most msgpack values one body may hold.
    max_items: usize,
    /// Where the connection is.
    state: ClientState,
}

impl ClientProtocol {
    /// A new connection asking for `conntype`, with our `registry` (a [`Registry`], or
    /// one shared in an `Arc`: a ping client opening thousands of connections gives
    /// them all [`Registry::shared_internal`] instead of building one each).
    pub fn new(
        conntype: ConnType,
        registry: impl Into<Arc<Registry>>,
        sync: RegistrySync,
        max_depth: usize,
    ) -> Self {
        ClientProtocol {
            conntype,
            registry: registry.into(),
            sync,
            max_depth,
            max_items: Limits::default().max_items,
            state: ClientState::AwaitHello,
        }
    }

    /// Refuses bodies holding more than `max_items` msgpack values with `packettoolarge`
    /// (default: [`Limits::max_items`]).
    pub fn with_max_items(mut self, max_items: usize) -> Self {
        self.max_items = max_items;
        self
    }

    /// The current state.
    pub fn state(&self) -> &ClientState {
        &self.state
    }

    /// The registry, with the server's ids once the handshake is done.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The connection type asked for.
    pub fn conntype(&self) -> &ConnType {
        &self.conntype
    }

    /// Marks the connection closed.
    pub fn close(&mut self) {
        self.state = ClientState::Closed;
    }

    /// Handles one received frame.
    pub fn handle(&mut self, frame: Frame) -> Step {
        if self.state == ClientState::Closed {
            return Step::nothing();
        }
        if frame.id == ids::HELLO
            && self.state == ClientState::AwaitHello
            && frame.body == *HELLO_BODY
            && value::validate(&frame.body, self.max_depth, self.max_items).is_ok()
        {
            // Our own hello, which is the reference's byte for byte: a map with our
            // protoversion, within the limits. Taken as it is, without building it.
            return self.hello_accepted();
        }
        if frame.id == ids::PONG
            && self.state == ClientState::Established
            && self.conntype == ConnType::Ping
        {
            // The pong the connection is for: checked as a decode would check it (the same
            // refusals), and left for the caller to build if it needs the server's map.
            return match value::validate(&frame.body, self.max_depth, self.max_items) {
                Ok(()) => Step::event(Event::Pong(PongMessage::checked(
                    frame.body,
                    self.max_depth,
                ))),
                Err(e) => self.closing(Step::close(e.close_reason())),
            };
        }
        let body = match decode(&frame, self.max_depth, self.max_items) {
            Ok(body) => body,
            Err(reason) => return self.closing(Step::close(reason)),
        };
        let step = match (frame.id, &self.state) {
            (ids::CLOSECONN, _) => peer_closed(&body),
            (ids::HELLO, ClientState::AwaitHello) => self.on_hello(&body),
            // Nothing but a hello can come first from a peng3dnet server.
            (_, ClientState::AwaitHello) => Step::close(CloseReason::InvalidPacket),
            (ids::HANDSHAKE, ClientState::AwaitHandshake) => self.on_handshake(&body),
            (ids::HANDSHAKE | ids::HANDSHAKE_ACCEPT, _) => {
                Step::close(CloseReason::SmartPacketInvalid)
            }
            (id, ClientState::Established) if id >= 64 => match &self.conntype {
                ConnType::Ping => match id {
                    // Taken above, without decoding.
                    ids::PONG => Step::nothing(),
                    ids::PING => Step::close(CloseReason::PingInvalidSide),
                    _ => Step::close(CloseReason::InvalidPingPacket),
                },
                ConnType::Classic => match self.registry.name(id) {
                    Some(name) => Step::event(Event::Packet(Packet {
                        id,
                        name: Some(name.to_owned()),
                        body,
                    })),
                    None => Step::nothing(),
                },
                ConnType::Custom(_) => Step::event(Event::Packet(Packet {
                    id,
                    name: None,
                    body,
                })),
            },
            _ => Step::nothing(),
        };
        self.closing(step)
    }

    fn closing(&mut self, step: Step) -> Step {
        if matches!(step.event, Some(Event::Close(_) | Event::PeerClosed(_))) {
            self.state = ClientState::Closed;
        }
        step
    }

    fn on_hello(&mut self, body: &Value) -> Step {
        if !body.is_map() {
            return Step::close(CloseReason::InvalidPacket);
        }
        if !protoversion_ok(body) {
            return Step::close(CloseReason::ProtoVersionMismatch);
        }
        self.hello_accepted()
    }

    /// A hello that passed: settype, then the handshake (classic) or established.
    fn hello_accepted(&mut self) -> Step {
        let send = Some(settype_frame(&self.conntype));
        if self.conntype == ConnType::Classic {
            self.state = ClientState::AwaitHandshake;
            return Step { send, event: None };
        }
        self.state = ClientState::Established;
        Step {
            send,
            event: Some(Event::Established(self.conntype.clone())),
        }
    }

    fn on_handshake(&mut self, body: &Value) -> Step {
        if !protoversion_ok(body) {
            return Step::close(CloseReason::ProtoVersionMismatch);
        }
        let server_registry = get(body, "registry").cloned().unwrap_or(Value::Nil);
        if Arc::make_mut(&mut self.registry)
            .sync_with(&server_registry, self.sync)
            .is_err()
        {
            return Step::close(CloseReason::PacketRegMismatch);
        }
        self.state = ClientState::Established;
        Step {
            send: Some(Frame::new(
                ids::HANDSHAKE_ACCEPT,
                value::encode(&map([("success", true.into())])),
            )),
            event: Some(Event::Established(ConnType::Classic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MissingPacketAction;

    fn frame(id: u32, body: Value) -> Frame {
        Frame::new(id, value::encode(&body))
    }

    fn registry(names: &[&str]) -> Registry {
        let mut r = Registry::new();
        for n in names {
            r.register(n).unwrap();
        }
        r
    }

    fn server_with(names: &[&str], extra: Vec<ConnType>) -> ServerProtocol {
        ServerProtocol::new(Arc::new(ServerSetup::new(
            Arc::new(registry(names)),
            extra,
            64,
        )))
    }

    fn server() -> ServerProtocol {
        server_with(&["app:t.a"], vec![ConnType::Ping])
    }

    fn client(conntype: ConnType, names: &[&str]) -> ClientProtocol {
        ClientProtocol::new(conntype, registry(names), RegistrySync::default(), 64)
    }

    fn close_reason(step: &Step) -> Option<&CloseReason> {
        match &step.event {
            Some(Event::Close(r)) => Some(r),
            _ => None,
        }
    }

    /// Runs a full exchange in memory: frames from each side go to the other until quiet.
    fn run_classic(
        client_names: &[&str],
        server_names: &[&str],
        sync: RegistrySync,
    ) -> (Vec<Event>, Vec<Event>) {
        let mut s = server_with(server_names, vec![]);
        let mut c = ClientProtocol::new(ConnType::Classic, registry(client_names), sync, 64);
        let mut to_client = vec![hello_frame()];
        let mut to_server = vec![];
        let (mut cev, mut sev) = (vec![], vec![]);
        while !to_client.is_empty() || !to_server.is_empty() {
            for f in std::mem::take(&mut to_client) {
                let st = c.handle(f);
                to_server.extend(st.send);
                cev.extend(st.event);
            }
            for f in std::mem::take(&mut to_server) {
                let st = s.handle(f);
                to_client.extend(st.send);
                sev.extend(st.event);
            }
        }
        (cev, sev)
    }

    /// The ping built as a map (the caller's data, `time` and `seq` set in place or
    /// appended) and then encoded: what [`ping_body`] must write.
    fn ping_built(data: &Value, time: f64, seq: u64) -> Vec<u8> {
        let mut message = if data.is_map() { data.clone() } else { map([]) };
        value::insert(&mut message, "time", Value::F64(time));
        value::insert(&mut message, "seq", Value::from(seq));
        value::encode(&message).to_vec()
    }

    #[test]
    fn ping_body_is_the_built_map_encoded() {
        let many: Vec<(String, Value)> =
            (0..20).map(|i| (format!("k{i}"), Value::from(i))).collect();
        let cases = [
            map([]),
            Value::Nil,
            Value::from("not a map"),
            map([("time", Value::from("old")), ("x", Value::from(1))]),
            map([
                ("x", Value::from(1)),
                ("seq", Value::from(9)),
                ("time", Value::Nil),
            ]),
            // Only the first of two equal keys takes the new value.
            map([("seq", Value::from(1)), ("seq", Value::from(2))]),
            Value::Map(vec![(Value::from(5), Value::from(1))]),
            Value::Map(
                many.iter()
                    .map(|(k, v)| (Value::from(k.as_str()), v.clone()))
                    .collect(),
            ),
        ];
        for data in &cases {
            for seq in [0, 1, 300, u64::MAX] {
                let mut body = vec![0xff];
                ping_body(&mut body, data, 1.7e9 + 0.25, seq);
                assert_eq!(body[0], 0xff, "appends");
                assert_eq!(
                    &body[1..],
                    &ping_built(data, 1.7e9 + 0.25, seq)[..],
                    "{data:?} {seq}"
                );
            }
        }
    }

    #[test]
    fn a_hello_taken_as_our_bytes_is_handled_as_when_decoded() {
        // The same map with its keys the other way round is decoded: both must agree.
        let reordered = frame(
            ids::HELLO,
            map([
                ("protoversion", PROTOVERSION.into()),
                ("version", VERSION.into()),
            ]),
        );
        assert_ne!(reordered.body, hello_frame().body);
        for conntype in [
            ConnType::Ping,
            ConnType::Classic,
            ConnType::Custom("x".into()),
        ] {
            for (items, depth) in [(1024, 64), (1, 64), (4, 64), (1024, 1), (1024, 0)] {
                let mut fast = client(conntype.clone(), &[]).with_max_items(items);
                fast.max_depth = depth;
                let mut slow = client(conntype.clone(), &[]).with_max_items(items);
                slow.max_depth = depth;
                let (a, b) = (fast.handle(hello_frame()), slow.handle(reordered.clone()));
                assert_eq!(a, b, "{conntype} items {items} depth {depth}");
                assert_eq!(fast.state(), slow.state());
            }
        }
        // After the hello, a second one is not a hello any more.
        let mut c = client(ConnType::Ping, &[]);
        assert!(c.handle(hello_frame()).send.is_some());
        assert_eq!(c.handle(hello_frame()), Step::nothing());
    }

    #[test]
    fn closeconn_pingcomplete_is_encoded_once_with_the_same_bytes() {
        let fresh = value::encode(&map([("reason", "pingcomplete".into())]));
        assert_eq!(
            closeconn_frame(Some(&CloseReason::PingComplete)).body,
            fresh
        );
        let other = closeconn_frame(Some(&CloseReason::Timeout));
        assert_eq!(
            other.body,
            value::encode(&map([("reason", "timeout".into())]))
        );
    }

    #[test]
    fn the_ping_settype_is_encoded_once_with_the_same_bytes() {
        let fresh = value::encode(&map([("conntype", "ping".into())]));
        assert_eq!(settype_frame(&ConnType::Ping).body, fresh);
        assert_eq!(settype_frame(&ConnType::Ping).id, ids::SETTYPE);
    }

    #[test]
    fn hello_and_closeconn_bytes_match_the_reference() {
        assert_eq!(
            &hello_frame().body[..],
            &crate::frame::tests_support::hex(
                "82a776657273696f6ea7302e312e336130ac70726f746f76657273696f6e02"
            )[..]
        );
        assert_eq!(
            &closeconn_frame(Some(&CloseReason::PingComplete)).body[..],
            &crate::frame::tests_support::hex("81a6726561736f6eac70696e67636f6d706c657465")[..]
        );
        assert_eq!(
            &settype_frame(&ConnType::Ping).body[..],
            b"\x81\xa8conntype\xa4ping"
        );
    }

    #[test]
    fn classic_handshake_completes_on_both_sides_with_registry_sync() {
        let (cev, sev) = run_classic(
            &["app:t.b", "app:t.a"],
            &["app:t.a", "app:t.b"],
            RegistrySync::default(),
        );
        assert_eq!(cev, vec![Event::Established(ConnType::Classic)]);
        assert_eq!(sev, vec![Event::Established(ConnType::Classic)]);
    }

    #[test]
    fn registry_mismatch_closes_with_packetregmismatch_or_is_ignored() {
        let (cev, sev) = run_classic(&["app:t.a"], &["app:t.x"], RegistrySync::default());
        assert_eq!(cev, vec![Event::Close(CloseReason::PacketRegMismatch)]);
        assert!(sev.is_empty());
        let ignore = RegistrySync {
            missing_packet_action: MissingPacketAction::Ignore,
            ..RegistrySync::default()
        };
        let (cev, sev) = run_classic(&["app:t.a"], &["app:t.x"], ignore);
        assert_eq!(cev, vec![Event::Established(ConnType::Classic)]);
        assert_eq!(sev, vec![Event::Established(ConnType::Classic)]);
    }

    #[test]
    fn client_refuses_another_protoversion_but_not_another_version_string() {
        let mut c = client(ConnType::Classic, &[]);
        let st = c.handle(frame(
            1,
            map([("version", "9.9".into()), ("protoversion", 3.into())]),
        ));
        assert_eq!(close_reason(&st), Some(&CloseReason::ProtoVersionMismatch));
        assert_eq!(c.state(), &ClientState::Closed);

        let mut c = client(ConnType::Classic, &[]);
        let st = c.handle(frame(
            1,
            map([("version", "9.9".into()), ("protoversion", 2.into())]),
        ));
        assert_eq!(st.send, Some(settype_frame(&ConnType::Classic)));
        assert_eq!(c.state(), &ClientState::AwaitHandshake);
        let hs = map([
            ("version", "x".into()),
            ("protoversion", 1.into()),
            ("registry", Registry::new().to_value()),
        ]);
        assert_eq!(
            close_reason(&c.handle(frame(3, hs))),
            Some(&CloseReason::ProtoVersionMismatch)
        );
    }

    #[test]
    fn client_refuses_a_first_packet_that_is_not_hello() {
        let mut c = client(ConnType::Ping, &[]);
        assert_eq!(
            close_reason(&c.handle(frame(65, map([])))),
            Some(&CloseReason::InvalidPacket)
        );
    }

    #[test]
    fn server_settype_rules() {
        let mut s = server();
        assert_eq!(
            close_reason(&s.handle(frame(2, map([("conntype", "nope".into())])))),
            Some(&CloseReason::UnknownConnType)
        );
        assert_eq!(s.state(), &ServerState::Closed);

        let mut s = server();
        let st = s.handle(frame(2, map([])));
        assert_eq!(
            st.send.unwrap().id,
            ids::HANDSHAKE,
            "missing conntype means classic"
        );
        assert_eq!(s.state(), &ServerState::AwaitAccept);

        let mut s = server();
        assert_eq!(
            s.handle(frame(2, map([("conntype", "ping".into())]))).event,
            Some(Event::Established(ConnType::Ping))
        );

        let mut s = server_with(&[], vec![]);
        assert_eq!(
            close_reason(&s.handle(frame(2, map([("conntype", "ping".into())])))),
            Some(&CloseReason::UnknownConnType),
            "ping only on pingable servers"
        );

        let mut s = server();
        assert_eq!(
            close_reason(&s.handle(frame(2, Value::from(5)))),
            Some(&CloseReason::InvalidPacket)
        );
    }

    #[test]
    fn handshake_body_carries_version_and_whole_registry() {
        let mut s = server();
        let st = s.handle(frame(2, map([("conntype", "classic".into())])));
        let body = value::decode(&st.send.unwrap().body, 64).unwrap();
        assert_eq!(get(&body, "version"), Some(&Value::from(VERSION)));
        assert_eq!(get(&body, "protoversion"), Some(&Value::from(2)));
        let reg = get(&body, "registry").unwrap();
        assert_eq!(get(reg, "peng3dnet:internal.hello"), Some(&Value::from(1)));
        assert_eq!(get(reg, "app:t.a"), Some(&Value::from(64)));
        assert_eq!(reg.as_map().unwrap().len(), 6);
    }

    #[test]
    fn smart_packets_in_the_wrong_state_close_and_others_are_ignored() {
        // accept before settype
        let mut s = server();
        assert_eq!(
            close_reason(&s.handle(frame(4, map([("success", true.into())])))),
            Some(&CloseReason::SmartPacketInvalid)
        );
        // handshake sent to a server
        let mut s = server();
        assert_eq!(
            close_reason(&s.handle(frame(3, map([])))),
            Some(&CloseReason::SmartPacketInvalid)
        );
        // hello sent to a server: ignored
        let mut s = server();
        assert_eq!(s.handle(hello_frame()), Step::default());
        // second settype once established: ignored
        let mut s = server();
        s.handle(frame(2, map([("conntype", "ping".into())])));
        assert_eq!(
            s.handle(frame(2, map([("conntype", "classic".into())]))),
            Step::default()
        );
        // application packet before the handshake completes: ignored
        let mut s = server();
        s.handle(frame(2, map([])));
        assert_eq!(s.handle(frame(64, map([]))), Step::default());
        // handshake at a client that is already established
        let mut c = client(ConnType::Ping, &[]);
        c.handle(hello_frame());
        assert_eq!(
            close_reason(&c.handle(frame(3, map([])))),
            Some(&CloseReason::SmartPacketInvalid)
        );
        // accept at a client
        let mut c = client(ConnType::Classic, &[]);
        c.handle(hello_frame());
        assert_eq!(
            close_reason(&c.handle(frame(4, map([])))),
            Some(&CloseReason::SmartPacketInvalid)
        );
        // accept with success false: nothing happens
        let mut s = server();
        s.handle(frame(2, map([])));
        assert_eq!(
            s.handle(frame(4, map([("success", false.into())]))),
            Step::default()
        );
        assert_eq!(s.state(), &ServerState::AwaitAccept);
    }

    #[test]
    fn ping_connection_rules_on_the_server() {
        let mut s = server();
        s.handle(frame(2, map([("conntype", "ping".into())])));
        let ping = map([("time", Value::F64(1.5))]);
        assert_eq!(
            s.handle(frame(64, ping.clone())).event,
            Some(Event::Ping(PingMessage::from_value(&ping)))
        );
        assert_eq!(
            s.handle(frame(64, ping.clone())).event,
            Some(Event::Ping(PingMessage::from_value(&ping))),
            "every ping is answered"
        );
        assert_eq!(
            close_reason(&s.handle(frame(65, map([])))),
            Some(&CloseReason::PingInvalidSide)
        );
        assert_eq!(
            s.handle(frame(64, map([]))),
            Step::default(),
            "closed really stops"
        );

        let mut s = server();
        s.handle(frame(2, map([("conntype", "ping".into())])));
        assert_eq!(
            close_reason(&s.handle(frame(66, map([])))),
            Some(&CloseReason::InvalidPingPacket)
        );
    }

    #[test]
    fn a_pong_is_checked_and_built_only_when_asked_with_room_for_more_keys() {
        let mut c = client(ConnType::Ping, &[]);
        c.handle(hello_frame());
        let pong = map([("name", "lobby".into()), ("clients", 3.into())]);
        let Some(Event::Pong(message)) = c.handle(frame(65, pong.clone())).event else {
            panic!("a pong");
        };
        assert_eq!(message.bytes(), &value::encode(&pong)[..]);
        let Value::Map(entries) = message.to_map(2) else {
            panic!("a pong's map");
        };
        assert_eq!(entries.len(), 2);
        assert!(entries.capacity() >= 4);
        // A pong that does not decode is refused as any other body is.
        let mut c = client(ConnType::Ping, &[]);
        c.handle(hello_frame());
        let bad = c.handle(Frame::new(65, Bytes::from_static(b"\x82\xa1a")));
        assert_eq!(close_reason(&bad), Some(&CloseReason::InvalidPacket));
    }

    #[test]
    fn ping_connection_rules_on_the_client() {
        let mut c = client(ConnType::Ping, &[]);
        let st = c.handle(hello_frame());
        assert_eq!(st.send, Some(settype_frame(&ConnType::Ping)));
        assert_eq!(st.event, Some(Event::Established(ConnType::Ping)));
        assert_eq!(
            c.handle(frame(65, map([]))).event,
            Some(Event::Pong(
                PongMessage::decode(value::encode(&map([])), 64, 1000).unwrap()
            ))
        );
        assert_eq!(
            close_reason(&c.handle(frame(64, map([])))),
            Some(&CloseReason::PingInvalidSide)
        );
        let mut c = client(ConnType::Ping, &[]);
        c.handle(hello_frame());
        assert_eq!(
            close_reason(&c.handle(frame(70, map([])))),
            Some(&CloseReason::InvalidPingPacket)
        );
    }

    #[test]
    fn closeconn_is_accepted_in_every_state_with_or_without_reason() {
        let mut s = server();
        assert_eq!(
            s.handle(closeconn_frame(Some(&CloseReason::Other("bye".into()))))
                .event,
            Some(Event::PeerClosed(Some(CloseReason::Other("bye".into()))))
        );
        let mut c = client(ConnType::Classic, &[]);
        assert_eq!(
            c.handle(closeconn_frame(None)).event,
            Some(Event::PeerClosed(None))
        );
        let mut c = client(ConnType::Classic, &[]);
        assert_eq!(
            c.handle(frame(16, Value::from(1))).event,
            Some(Event::PeerClosed(None))
        );
    }

    #[test]
    fn classic_application_packets_are_named_and_unknown_ids_ignored() {
        let mut s = server();
        s.handle(frame(2, map([])));
        s.handle(frame(4, map([("success", true.into())])));
        let st = s.handle(frame(64, Value::from("x")));
        assert_eq!(
            st.event,
            Some(Event::Packet(Packet {
                id: 64,
                name: Some("app:t.a".into()),
                body: "x".into()
            }))
        );
        assert_eq!(s.handle(frame(99, Value::Nil)), Step::default());
    }

    #[test]
    fn custom_connection_types_pass_frames_through() {
        let custom = ConnType::Custom("mytype".into());
        let mut s = server_with(&[], vec![custom.clone()]);
        assert_eq!(
            s.handle(settype_frame(&custom)).event,
            Some(Event::Established(custom.clone()))
        );
        assert_eq!(
            s.handle(frame(200, Value::from(1))).event,
            Some(Event::Packet(Packet {
                id: 200,
                name: None,
                body: 1.into()
            }))
        );
        let mut c = client(custom.clone(), &[]);
        assert_eq!(
            c.handle(hello_frame()).event,
            Some(Event::Established(custom))
        );
    }

    /// The item walk, with its verdict as the close reason a peer would get.
    fn walk(body: &[u8], max_depth: usize, max_items: usize) -> Result<(), CloseReason> {
        value::check_items(body, max_depth, max_items).map_err(|e| e.close_reason())
    }

    #[test]
    fn item_budget_refuses_cheap_bodies_that_decode_to_huge_trees() {
        // array32 of a million empty arrays: 1 MB encoded, 40 MB decoded.
        let mut wide = vec![0xdd];
        wide.extend_from_slice(&1_000_000u32.to_be_bytes());
        wide.resize(5 + 1_000_000, 0x90);
        assert_eq!(walk(&wide, 64, 1 << 18), Err(CloseReason::PacketTooLarge));
        assert_eq!(walk(&wide, 64, 1_000_001), Ok(()));
        let mut s = ServerProtocol::new(Arc::new(
            ServerSetup::new(Arc::new(Registry::new()), [], 64).with_max_items(100),
        ));
        assert_eq!(
            close_reason(&s.handle(Frame::new(2, wide))),
            Some(&CloseReason::PacketTooLarge)
        );
        // Claims more values or bytes than the body holds: refused before any allocation.
        for body in [
            &b"\xdd\xff\xff\xff\xff"[..],
            b"\xdf\xff\xff\xff\xff\x80",
            b"\xc6\xff\xff\xff\xff",
            b"\xdb\x00\x00\x00\x05abc",
            b"\xc9\xff\xff\xff\xff\x01",
            b"\xc1",
            b"",
        ] {
            assert_eq!(
                walk(body, 64, 1000),
                Err(CloseReason::InvalidPacket),
                "{body:?}"
            );
        }
        // Nesting: refused as invalid whatever the item budget; within the limit, fine.
        let mut deep = vec![0x91u8; 10_000];
        deep.push(0xc0);
        assert_eq!(walk(&deep, 64, 40), Err(CloseReason::InvalidPacket));
        for k in 0..40usize {
            // k nested maps, each with a key before and after: {"a": {...}, "b": 1}
            let mut v = Value::Nil;
            for _ in 0..k {
                v = map([("a", v), ("b", 1.into())]);
            }
            let body = value::encode(&v);
            let decodes = value::decode(&body, 64).is_ok();
            let walked = walk(&body, 64, 1 << 20);
            assert!(
                walked.is_ok() || !decodes,
                "depth {k}: walker refuses what decodes"
            );
            assert_eq!(walked.is_ok(), k <= 32, "depth {k}");
        }
        // Every msgpack type is walked correctly: a document using all of them passes with
        // exactly its item count, and one item fewer is too many.
        let all = map([
            ("nil", Value::Nil),
            ("b", true.into()),
            ("i", Value::from(-70000)),
            ("u", Value::from(u64::MAX)),
            ("f32", Value::F32(1.5)),
            ("f", Value::F64(1.5)),
            ("s", "x".repeat(300).into()),
            ("bin", Value::Binary(vec![1; 70000])),
            ("a", Value::Array(vec![1.into(); 20])),
            ("e1", Value::Ext(1, vec![1])),
            ("e16", Value::Ext(2, vec![1; 16])),
            ("e3", Value::Ext(3, vec![1; 3])),
            ("e300", Value::Ext(4, vec![1; 300])),
        ]);
        let body = value::encode(&all);
        let items = 1 + 13 * 2 + 20;
        assert_eq!(walk(&body, 64, items), Ok(()));
        assert_eq!(walk(&body, 64, items - 1), Err(CloseReason::PacketTooLarge));
    }

    #[test]
    fn bad_msgpack_closes_with_invalidpacket() {
        let mut s = server();
        assert_eq!(
            close_reason(&s.handle(Frame::new(2, &b"\x82\xa1"[..]))),
            Some(&CloseReason::InvalidPacket)
        );
        let mut c = client(ConnType::Ping, &[]);
        let mut deep = vec![0x91u8; 1000];
        deep.push(0xc0);
        assert_eq!(
            close_reason(&c.handle(Frame::new(1, deep))),
            Some(&CloseReason::InvalidPacket)
        );
    }

    #[test]
    fn close_reasons_round_trip_through_their_wire_names() {
        for r in [
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
            "custom reason",
        ] {
            assert_eq!(CloseReason::from(r).as_str(), r);
        }
        assert!(!matches!(
            CloseReason::from("timeout"),
            CloseReason::Other(_)
        ));
    }
}
