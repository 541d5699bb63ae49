//! The client side of a ping connection, sans I/O: what a pinger makes of every frame.
//!
//! A ping client reads the server's hello, answers with `settype` `ping`, sends pings and
//! takes their pongs, and stops on a closeconn or a broken rule. [`PingClient`] holds all
//! of that: the connection state machine ([`ClientProtocol`]), the sequence numbers, which
//! ping is outstanding and when it was sent. The drivers (the tokio session, the tokio
//! one-shot ping and the blocking session of the `peng3dnet` crate) only move bytes and
//! read the clock; each passes `now` in, so the delay a pong reports is measured here, the
//! same way for all of them, and tests step time by hand.
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use peng3dnet_proto::frame::Frame;
//! use peng3dnet_proto::ping_client::{PingClient, Received};
//! use peng3dnet_proto::protocol::hello_frame;
//! use peng3dnet_proto::value::{self, map};
//! use peng3dnet_proto::wire::ids;
//! use peng3dnet_proto::Config;
//!
//! let start = Instant::now();
//! let mut client = PingClient::new(&Config::default());
//! // The server's hello: the client answers with settype.
//! let Ok(Received::Established(settype)) = client.handle_frame(hello_frame(), start) else {
//!     panic!("a hello establishes the connection");
//! };
//! assert_eq!(settype.id, ids::SETTYPE);
//! // A ping, and its pong 5 ms later.
//! let mut body = Vec::new();
//! let seq = client.send_ping(&mut body, &map([]), 1.7e9, start).unwrap();
//! let pong = value::encode(&map([("seq", seq.into()), ("time", 1.7e9.into())]));
//! let later = start + Duration::from_millis(5);
//! match client.handle_frame(Frame::new(ids::PONG, pong), later) {
//!     Ok(Received::Pong(pong)) => assert_eq!(pong.delay, Duration::from_millis(5)),
//!     other => panic!("expected the pong, got {other:?}"),
//! }
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use crate::close::CloseReason;
use crate::config::Config;
use crate::error::FrameError;
use crate::frame::Frame;
use crate::pong::PongMessage;
use crate::protocol::{ping_body, ClientProtocol, ConnType, Event};
use crate::registry::Registry;
use crate::value::Value;
use crate::wire::ids;

/// Where a ping connection is, as its client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingPhase {
    /// Connected, waiting for the server's hello.
    AwaitingHello,
    /// Established, no ping outstanding.
    Idle,
    /// Ping `seq` was sent at `sent` and its pong has not come.
    AwaitingPong {
        /// The outstanding ping's sequence number.
        seq: u64,
        /// When it was sent (the driver's clock).
        sent: Instant,
    },
    /// Closed, by either side: every further frame is ignored.
    Closed,
}

/// A pong taken by the client: which ping it answers and how long it took.
#[derive(Debug, Clone)]
pub struct Pong {
    /// The sequence number of the ping it answers.
    pub seq: u64,
    /// The pong's body (checked, not decoded).
    pub message: PongMessage,
    /// From sending the ping to handling its pong, on the driver's clock.
    pub delay: Duration,
}

/// What a frame meant to the client.
#[derive(Debug, Clone)]
pub enum Received {
    /// The hello was accepted: send this `settype` frame; pings may follow it at once.
    Established(Frame),
    /// The pong of the outstanding ping.
    Pong(Pong),
    /// Nothing for the caller: a late pong of a ping given up on, or a packet with no
    /// meaning here. Read on.
    Nothing,
}

/// Why a ping connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingFailure {
    /// The peer does not speak peng3dnet: its first packet is not a valid hello.
    NotPeng3dnet(String),
    /// The server speaks another version of the protocol.
    ProtocolMismatch,
    /// The server closed the connection, with its closeconn reason if it sent one;
    /// `at_hello` when it did so instead of (or right after) its hello.
    ClosedByPeer {
        /// The server's reason.
        reason: Option<CloseReason>,
        /// Whether the connection was still waiting for the hello.
        at_hello: bool,
    },
    /// The server broke the protocol after the hello; we close with this reason.
    Protocol(CloseReason),
}

impl fmt::Display for PingFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PingFailure::NotPeng3dnet(why) => write!(f, "not a peng3dnet server: {why}"),
            PingFailure::ProtocolMismatch => f.write_str("protocol version mismatch"),
            PingFailure::ClosedByPeer {
                reason: Some(reason),
                ..
            } => write!(f, "the server closed the connection: {reason}"),
            PingFailure::ClosedByPeer { reason: None, .. } => {
                f.write_str("the server closed the connection")
            }
            PingFailure::Protocol(reason) => write!(f, "protocol violation ({reason})"),
        }
    }
}

impl std::error::Error for PingFailure {}

/// The end of a ping connection: why, and the closeconn to send before closing when
/// closing is ours to do (`None`: the server closed, there is nothing to answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// Why the connection ends.
    pub failure: PingFailure,
    /// The reason to send in our closeconn, if we are the one closing.
    pub close: Option<CloseReason>,
}

impl Stop {
    fn closing(reason: CloseReason, failure: PingFailure) -> Stop {
        Stop {
            failure,
            close: Some(reason),
        }
    }

    fn quietly(failure: PingFailure) -> Stop {
        Stop {
            failure,
            close: None,
        }
    }
}

/// [`PingClient::send_ping`] before the connection is established or after it closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotEstablished;

impl fmt::Display for NotEstablished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the ping connection is not established")
    }
}

impl std::error::Error for NotEstablished {}

/// The client side of one ping connection (see the [module](self) docs).
#[derive(Debug)]
pub struct PingClient {
    protocol: ClientProtocol,
    phase: PingPhase,
    next_seq: u64,
}

impl PingClient {
    /// A connection about to read the hello, with `config`'s registry sync and body limits.
    pub fn new(config: &Config) -> PingClient {
        let protocol = ClientProtocol::new(
            ConnType::Ping,
            Registry::shared_internal(),
            config.registry_sync,
            config.limits.max_depth,
        )
        .with_max_items(config.limits.max_items);
        PingClient {
            protocol,
            phase: PingPhase::AwaitingHello,
            next_seq: 0,
        }
    }

    /// Where the connection is.
    pub fn phase(&self) -> PingPhase {
        self.phase
    }

    /// The sequence number of the ping awaiting its pong, if any.
    pub fn outstanding(&self) -> Option<u64> {
        match self.phase {
            PingPhase::AwaitingPong { seq, .. } => Some(seq),
            _ => None,
        }
    }

    /// Writes the body of the next ping into `out` (`data` with `time` and `seq` set, as
    /// [`ping_body`] does) and makes it the outstanding one, sent at `now`; returns its
    /// sequence number. A ping still outstanding is given up on: its pong, if it comes
    /// later, is skipped.
    pub fn send_ping(
        &mut self,
        out: &mut Vec<u8>,
        data: &Value,
        unix_time: f64,
        now: Instant,
    ) -> Result<u64, NotEstablished> {
        match self.phase {
            PingPhase::Idle | PingPhase::AwaitingPong { .. } => {}
            PingPhase::AwaitingHello | PingPhase::Closed => return Err(NotEstablished),
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        ping_body(out, data, unix_time, seq);
        self.phase = PingPhase::AwaitingPong { seq, sent: now };
        Ok(seq)
    }

    /// Handles one frame from the server, received at `now`.
    pub fn handle_frame(&mut self, frame: Frame, now: Instant) -> Result<Received, Stop> {
        match self.phase {
            PingPhase::Closed => Ok(Received::Nothing),
            PingPhase::AwaitingHello => self.on_hello(frame),
            PingPhase::Idle => self.on_frame(frame, None),
            PingPhase::AwaitingPong { seq, sent } => self.on_frame(frame, Some((seq, sent, now))),
        }
    }

    /// The server's bytes could not be taken as a frame (too large, bad compression...):
    /// before the hello the peer is not a peng3dnet server; after it, it broke the
    /// protocol. An [`FrameError::Io`] is the driver's to report; it only closes here.
    pub fn handle_frame_error(&mut self, error: &FrameError) -> Stop {
        let at_hello = self.phase == PingPhase::AwaitingHello;
        self.close();
        if at_hello {
            let failure = PingFailure::NotPeng3dnet(error.to_string());
            return Stop::closing(CloseReason::InvalidPacket, failure);
        }
        let reason = error.close_reason().unwrap_or(CloseReason::InvalidPacket);
        Stop::closing(reason.clone(), PingFailure::Protocol(reason))
    }

    /// The server ended the stream without a closeconn.
    pub fn handle_eof(&mut self) -> Stop {
        let at_hello = self.phase == PingPhase::AwaitingHello;
        self.close();
        Stop::quietly(PingFailure::ClosedByPeer {
            reason: None,
            at_hello,
        })
    }

    /// Marks the connection closed by us (after `pingcomplete`, a time-out, or a failed
    /// write): later frames are ignored and no ping can be sent.
    pub fn close(&mut self) {
        self.protocol.close();
        self.phase = PingPhase::Closed;
    }

    fn on_hello(&mut self, frame: Frame) -> Result<Received, Stop> {
        if frame.id != ids::HELLO && frame.id != ids::CLOSECONN {
            self.close();
            let failure =
                PingFailure::NotPeng3dnet(format!("first packet has id {}, not hello", frame.id));
            return Err(Stop::closing(CloseReason::InvalidPacket, failure));
        }
        let step = self.protocol.handle(frame);
        let stop = match step.event {
            Some(Event::Established(_)) => match step.send {
                Some(settype) => {
                    self.phase = PingPhase::Idle;
                    return Ok(Received::Established(settype));
                }
                None => Stop::quietly(PingFailure::NotPeng3dnet("invalid hello".into())),
            },
            Some(Event::PeerClosed(reason)) => Stop::quietly(PingFailure::ClosedByPeer {
                reason,
                at_hello: true,
            }),
            Some(Event::Close(CloseReason::ProtoVersionMismatch)) => Stop::closing(
                CloseReason::ProtoVersionMismatch,
                PingFailure::ProtocolMismatch,
            ),
            Some(Event::Close(reason)) => {
                let failure = PingFailure::NotPeng3dnet(format!("invalid hello ({reason})"));
                Stop::closing(reason, failure)
            }
            _ => Stop::quietly(PingFailure::NotPeng3dnet("invalid hello".into())),
        };
        self.close();
        Err(stop)
    }

    /// A frame after the hello; `waiting` is the outstanding ping (sequence number, send
    /// time) and the time of this frame.
    fn on_frame(
        &mut self,
        frame: Frame,
        waiting: Option<(u64, Instant, Instant)>,
    ) -> Result<Received, Stop> {
        let stop = match self.protocol.handle(frame).event {
            Some(Event::Pong(message)) => {
                let Some((seq, sent, now)) = waiting else {
                    // No ping outstanding: the late pong of one given up on.
                    return Ok(Received::Nothing);
                };
                if message.echoed_seq().is_some_and(|echoed| echoed != seq) {
                    return Ok(Received::Nothing);
                }
                self.phase = PingPhase::Idle;
                return Ok(Received::Pong(Pong {
                    seq,
                    message,
                    delay: now.saturating_duration_since(sent),
                }));
            }
            Some(Event::PeerClosed(reason)) => Stop::quietly(PingFailure::ClosedByPeer {
                reason,
                at_hello: false,
            }),
            Some(Event::Close(reason)) => {
                Stop::closing(reason.clone(), PingFailure::Protocol(reason))
            }
            _ => return Ok(Received::Nothing),
        };
        self.close();
        Err(stop)
    }
}

#[cfg(test)]
mod tests {
    //! A client and a server state machine talking in memory, on a clock the test steps.

    use std::sync::Arc;

    use super::*;
    use crate::pong::{PingRequest, PingResponder, ServerTiming};
    use crate::protocol::{closeconn_frame, hello_frame, ServerProtocol, ServerSetup};
    use crate::stats::{ClientId, Stats};
    use crate::value::{self, get, map};

    /// A ping server in memory: the state machine and a responder with a name.
    struct Server {
        protocol: ServerProtocol,
        responder: PingResponder,
        stats: Stats,
    }

    impl Server {
        fn new() -> Server {
            let setup = ServerSetup::new(Registry::shared_internal(), [ConnType::Ping], 64);
            Server {
                protocol: ServerProtocol::new(Arc::new(setup)),
                responder: PingResponder::new().with_static_data(map([("name", "arena".into())])),
                stats: Stats::default(),
            }
        }

        /// The server's answers to one client frame.
        fn take(&mut self, frame: Frame) -> Vec<Frame> {
            let step = self.protocol.handle(frame);
            let mut out: Vec<Frame> = step.send.into_iter().collect();
            match step.event {
                Some(Event::Ping(ping)) => {
                    let addr = "192.0.2.1:4000".parse().unwrap();
                    let request = PingRequest::new(&ping, ClientId(1), addr, &self.stats);
                    let timing = ServerTiming::at(std::time::SystemTime::UNIX_EPOCH);
                    let pong = self.responder.encode_pong(&request, 1 << 16, timing);
                    out.push(Frame::new(ids::PONG, pong));
                }
                Some(Event::Close(reason)) => out.push(closeconn_frame(Some(&reason))),
                _ => {}
            }
            out
        }
    }

    fn established(t0: Instant) -> (PingClient, Frame) {
        let mut client = PingClient::new(&Config::default());
        match client.handle_frame(hello_frame(), t0) {
            Ok(Received::Established(settype)) => (client, settype),
            other => panic!("hello did not establish: {other:?}"),
        }
    }

    fn ping(client: &mut PingClient, now: Instant) -> (u64, Frame) {
        let mut body = Vec::new();
        let seq = client.send_ping(&mut body, &map([]), 1.7e9, now).unwrap();
        (seq, Frame::new(ids::PING, body))
    }

    #[test]
    fn a_ping_through_a_server_in_memory_measures_the_simulated_delay() {
        let t0 = Instant::now();
        let mut server = Server::new();
        let (mut client, settype) = established(t0);
        let answers = server.take(settype);
        assert!(
            answers.is_empty(),
            "settype ping needs no answer: {answers:?}"
        );
        for (seq_wanted, wait_ms) in [(0, 3), (1, 250)] {
            let sent = t0 + Duration::from_secs(seq_wanted);
            let (seq, frame) = ping(&mut client, sent);
            assert_eq!(seq, seq_wanted);
            let answers = server.take(frame);
            assert_eq!(answers.len(), 1);
            let at = sent + Duration::from_millis(wait_ms);
            let Ok(Received::Pong(pong)) = client.handle_frame(answers[0].clone(), at) else {
                panic!("no pong for ping {seq}");
            };
            assert_eq!(
                (pong.seq, pong.delay),
                (seq, Duration::from_millis(wait_ms))
            );
            let data = pong.message.to_map(0);
            assert_eq!(get(&data, "name"), Some(&Value::from("arena")));
            assert_eq!(client.phase(), PingPhase::Idle);
        }
    }

    #[test]
    fn the_late_pong_of_a_ping_given_up_on_is_skipped() {
        let t0 = Instant::now();
        let mut server = Server::new();
        let (mut client, settype) = established(t0);
        server.take(settype);
        let (_, first) = ping(&mut client, t0);
        let late = server.take(first).remove(0);
        let (second_seq, second) = ping(&mut client, t0 + Duration::from_secs(2));
        let on_time = server.take(second).remove(0);
        let now = t0 + Duration::from_secs(3);
        assert!(matches!(
            client.handle_frame(late, now),
            Ok(Received::Nothing)
        ));
        assert_eq!(client.outstanding(), Some(second_seq));
        let Ok(Received::Pong(pong)) = client.handle_frame(on_time, now) else {
            panic!("the second ping's pong was not taken");
        };
        assert_eq!((pong.seq, pong.delay), (second_seq, Duration::from_secs(1)));
    }

    #[test]
    fn a_pong_with_nothing_outstanding_is_skipped() {
        let t0 = Instant::now();
        let (mut client, _) = established(t0);
        let pong = Frame::new(ids::PONG, value::encode(&map([("seq", 9u64.into())])));
        assert!(matches!(
            client.handle_frame(pong, t0),
            Ok(Received::Nothing)
        ));
        assert_eq!(client.phase(), PingPhase::Idle);
    }

    #[test]
    fn a_first_packet_that_is_not_a_hello_means_not_peng3dnet() {
        let mut client = PingClient::new(&Config::default());
        let stop = client
            .handle_frame(
                Frame::new(ids::PONG, value::encode(&map([]))),
                Instant::now(),
            )
            .unwrap_err();
        assert_eq!(stop.close, Some(CloseReason::InvalidPacket));
        assert_eq!(
            stop.failure,
            PingFailure::NotPeng3dnet("first packet has id 65, not hello".into())
        );
        assert_eq!(client.phase(), PingPhase::Closed);
    }

    #[test]
    fn a_hello_of_another_protoversion_is_a_mismatch_closed_with_its_reason() {
        let mut client = PingClient::new(&Config::default());
        let hello = map([("version", "9".into()), ("protoversion", 9u64.into())]);
        let stop = client
            .handle_frame(
                Frame::new(ids::HELLO, value::encode(&hello)),
                Instant::now(),
            )
            .unwrap_err();
        assert_eq!(stop.failure, PingFailure::ProtocolMismatch);
        assert_eq!(stop.close, Some(CloseReason::ProtoVersionMismatch));
    }

    #[test]
    fn a_closeconn_instead_of_the_hello_is_a_close_at_hello() {
        let mut client = PingClient::new(&Config::default());
        let close = closeconn_frame(Some(&CloseReason::ServerFull));
        let stop = client.handle_frame(close, Instant::now()).unwrap_err();
        assert_eq!(
            stop,
            Stop::quietly(PingFailure::ClosedByPeer {
                reason: Some(CloseReason::ServerFull),
                at_hello: true
            })
        );
    }

    #[test]
    fn a_closeconn_while_waiting_ends_the_ping_with_the_servers_reason() {
        let t0 = Instant::now();
        let (mut client, _) = established(t0);
        ping(&mut client, t0);
        let close = closeconn_frame(Some(&CloseReason::Timeout));
        let stop = client.handle_frame(close, t0).unwrap_err();
        assert_eq!(
            stop.failure,
            PingFailure::ClosedByPeer {
                reason: Some(CloseReason::Timeout),
                at_hello: false
            }
        );
        assert_eq!(stop.close, None, "nothing to answer a closeconn with");
        let mut body = Vec::new();
        assert_eq!(
            client.send_ping(&mut body, &map([]), 0.0, t0),
            Err(NotEstablished)
        );
    }

    #[test]
    fn a_ping_from_the_server_breaks_the_protocol() {
        let t0 = Instant::now();
        let (mut client, _) = established(t0);
        let wrong = Frame::new(ids::PING, value::encode(&map([])));
        let stop = client.handle_frame(wrong, t0).unwrap_err();
        assert_eq!(
            stop,
            Stop::closing(
                CloseReason::PingInvalidSide,
                PingFailure::Protocol(CloseReason::PingInvalidSide)
            )
        );
    }

    #[test]
    fn a_frame_error_before_the_hello_is_not_peng3dnet_and_after_it_a_violation() {
        let too_large = FrameError::TooLarge { length: 10, max: 5 };
        let mut client = PingClient::new(&Config::default());
        let stop = client.handle_frame_error(&too_large);
        assert!(matches!(stop.failure, PingFailure::NotPeng3dnet(_)));
        assert_eq!(stop.close, Some(CloseReason::InvalidPacket));

        let (mut client, _) = established(Instant::now());
        let stop = client.handle_frame_error(&too_large);
        assert_eq!(
            stop.failure,
            PingFailure::Protocol(CloseReason::PacketTooLarge)
        );
    }

    #[test]
    fn no_ping_can_be_sent_before_the_hello() {
        let mut client = PingClient::new(&Config::default());
        let mut body = Vec::new();
        assert_eq!(
            client.send_ping(&mut body, &map([]), 0.0, Instant::now()),
            Err(NotEstablished)
        );
        assert!(body.is_empty());
    }

    #[test]
    fn the_end_of_stream_is_a_quiet_close() {
        let mut client = PingClient::new(&Config::default());
        assert_eq!(
            client.handle_eof(),
            Stop::quietly(PingFailure::ClosedByPeer {
                reason: None,
                at_hello: true
            })
        );
    }
}
