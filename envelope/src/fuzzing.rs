//! Entry points for the fuzz targets (`fuzz/`, see docs/security.md "Fuzzing"):
//! the parsers of this crate that meet untrusted bytes — the access endpoint's
//! query and headers, the admin API's requests, the kernel's ipset and
//! nf_tables replies —
//! each behind one small function that feeds them exactly as the daemon does.
//! Hidden from the docs and not a stable API: it follows the daemon's internals.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::Service as _;
use netlink_packet_core::NetlinkPayload;
use tokio_util::task::TaskTracker;
use warp::http::header::{HeaderName, HeaderValue};
use warp::http::{Method, Request};

use crate::access::{self, Access, Tokens};
use crate::admin::{self, AdminState, PeerPolicy};
use crate::events::Events;
use crate::firewall::ipset::socket::{acknowledged, frame, messages};
use crate::firewall::ipset::wire::{Element, Request as IpsetRequest, FAMILY_INET, FAMILY_INET6};
use crate::firewall::NoopFirewall;
use crate::grants::{EndReason, GrantRequest, Grants};
use crate::http::{PeerAddr, PeerCred, Reply};
use crate::keys::Keys;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::reload::Reloader;

/// The issuer, machine (audience) and subject the harnesses' tokens must name.
pub const ISSUER: &str = "locate";
pub const MACHINE: &str = "localhost";
pub const SUBJECT: &str = "ndt";
/// The uid the admin harness runs as (root and this uid are allowed).
pub const ADMIN_UID: u32 = 4242;
/// The client address of every access request.
pub const PEER: &str = "192.0.2.7:40000";
/// The two grants every admin request finds (ids 1 and 2).
pub const GRANTED: [&str; 2] = ["192.0.2.7", "2001:db8::7"];

/// A response as the client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Builds a request as hyper would hand it over; `None` when hyper would
/// already have refused its head (method, target or a header unparsable).
fn request(
    method: &[u8],
    target: &str,
    headers: &[(&[u8], &[u8])],
    body: &[u8],
) -> Option<Request<Full<Bytes>>> {
    let mut builder = Request::builder()
        .method(Method::from_bytes(method).ok()?)
        .uri(target);
    for (name, value) in headers {
        builder = builder.header(
            HeaderName::from_bytes(name).ok()?,
            HeaderValue::from_bytes(value).ok()?,
        );
    }
    let request = builder.body(Full::new(Bytes::copy_from_slice(body))).ok()?;
    // A request-target is a path (origin form) on both surfaces.
    request.uri().path().starts_with('/').then_some(request)
}

async fn read(response: Reply) -> Answer {
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(e) => format!("<body error: {e}>").into_bytes(),
    };
    Answer {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime")
}

/// The access endpoint's filters (`access::routes`) as the daemon serves them
/// with `--token-required --single-use-tokens`, the given verify keys, issuer
/// [`ISSUER`], machine [`MACHINE`] and subject [`SUBJECT`], no transmit-rate
/// gate and a no-op firewall. Requests carry no connection to upgrade, so
/// nothing is ever granted: every check runs, the handler never does.
pub struct AccessHarness {
    runtime: tokio::runtime::Runtime,
    app: Arc<Access>,
}

impl std::fmt::Debug for AccessHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessHarness").finish_non_exhaustive()
    }
}

impl AccessHarness {
    pub fn new(key_files: Vec<PathBuf>) -> Result<AccessHarness, common::KeyError> {
        let keys = Keys::load(key_files, ISSUER.to_owned(), MACHINE.to_owned())?;
        let runtime = runtime();
        let metrics = Arc::new(Metrics::new());
        let events = Events::new(64, metrics.clone());
        let (grants, _) = runtime.block_on(async { spawn_grants(&metrics, &events) });
        let app = Arc::new(Access {
            tokens: Tokens {
                required: true,
                keys: Some(Arc::new(keys)),
                subject: Some(SUBJECT.to_owned()),
                replay: Some(Arc::new(common::filters::ReplayCache::new(64))),
            },
            timeout: Duration::from_secs(60),
            max_hold: Duration::from_secs(3600),
            grants,
            metrics,
            tx_gate: None,
            tls: false,
            sessions: TaskTracker::new(),
            events,
        });
        Ok(AccessHarness { runtime, app })
    }

    /// One `GET target` with `headers` from [`PEER`]; `None` when hyper would
    /// have refused the request head.
    pub fn get(&self, target: &str, headers: &[(&[u8], &[u8])]) -> Option<Answer> {
        let mut request = request(b"GET", target, headers, b"")?;
        request
            .extensions_mut()
            .insert(PeerAddr(PEER.parse::<SocketAddr>().expect("peer address")));
        let service = hyper_util::service::TowerToHyperService::new(warp::service(access::routes(
            self.app.clone(),
        )));
        self.runtime.block_on(async {
            let response = service.call(request).await.unwrap_or_else(|e| match e {});
            Some(read(response).await)
        })
    }
}

/// The admin API's filters (`admin::routes`) with the given verify keys
/// (reloadable), a no-op firewall and, for each request, a fresh grant owner
/// holding the two grants of [`GRANTED`] (ids 1 and 2), a fresh event buffer
/// and life cycle (serving). A followed event stream is cut at the end of
/// the request, as a shutdown cuts it.
pub struct AdminHarness {
    runtime: tokio::runtime::Runtime,
    keys: Arc<Keys>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AdminHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminHarness").finish_non_exhaustive()
    }
}

/// An admin answer, and how many of the two grants are left after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAnswer {
    pub answer: Answer,
    pub grants_left: usize,
}

impl AdminHarness {
    pub fn new(key_files: Vec<PathBuf>) -> Result<AdminHarness, common::KeyError> {
        Ok(AdminHarness {
            runtime: runtime(),
            keys: Arc::new(Keys::load(
                key_files,
                ISSUER.to_owned(),
                MACHINE.to_owned(),
            )?),
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// One request from a peer with `uid` (allowed: root and [`ADMIN_UID`]);
    /// `None` when hyper would have refused the request head.
    pub fn request(
        &self,
        method: &[u8],
        target: &str,
        body: &[u8],
        uid: u32,
    ) -> Option<AdminAnswer> {
        let mut request = request(method, target, &[], body)?;
        request.extensions_mut().insert(PeerCred {
            uid,
            gid: uid,
            pid: Some(1),
        });
        self.runtime.block_on(async {
            let events = Events::new(64, self.metrics.clone());
            let (grants, owner) = spawn_grants(&self.metrics, &events);
            let stop = tokio_util::sync::CancellationToken::new();
            let mut leases = Vec::new();
            for ip in GRANTED {
                let lease = grants
                    .acquire(GrantRequest {
                        peer: ip.parse::<IpAddr>().expect("granted address"),
                        subject: SUBJECT.to_owned(),
                        monitoring: false,
                        deadline: tokio::time::Instant::now() + Duration::from_secs(60),
                    })
                    .await
                    .expect("a no-op grant");
                leases.push(lease);
            }
            let state = Arc::new(AdminState {
                reloader: Reloader::new(
                    Some(self.keys.clone()),
                    None,
                    self.metrics.clone(),
                    events.clone(),
                ),
                lifecycle: Lifecycle::new(self.metrics.clone()),
                events,
                stop: stop.clone(),
                grants: grants.clone(),
                machine: Some(MACHINE.to_owned()),
                subject: Some(SUBJECT.to_owned()),
                firewall: "none".to_owned(),
                max_clients: 4,
                started: Instant::now(),
                listening: Vec::new(),
                metrics_listening: Vec::new(),
            });
            let policy = PeerPolicy {
                own_uid: nix::unistd::Uid::from_raw(ADMIN_UID),
                group: None,
            };
            let service = hyper_util::service::TowerToHyperService::new(warp::service(
                admin::routes(state, policy),
            ));
            let response = service.call(request).await.unwrap_or_else(|e| match e {});
            // A followed event stream ends only at shutdown: its body is
            // what the buffer held up to here.
            stop.cancel();
            let answer = read(response).await;
            let grants_left = grants.list().await.0.len();
            drop(leases);
            // The owner holds a sender of its own: only a shutdown ends it.
            let _ = grants.shutdown(EndReason::Shutdown).await;
            let _ = owner.await;
            Some(AdminAnswer {
                answer,
                grants_left,
            })
        })
    }
}

/// A grant owner over a no-op firewall with four slots, serving.
fn spawn_grants(metrics: &Arc<Metrics>, events: &Events) -> (Grants, tokio::task::JoinHandle<()>) {
    Grants::spawn(
        Arc::new(NoopFirewall),
        4,
        metrics.clone(),
        Lifecycle::new(metrics.clone()),
        events.clone(),
    )
}

/// One decoded message of an ipset reply datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpsetMessage {
    /// An answer (protocol, type, header, or one part of a list dump).
    Reply {
        seq: u32,
        protocol: Option<u8>,
        protocol_min: Option<u8>,
        revision: Option<u8>,
        revision_min: Option<u8>,
        /// Listed members as text (`192.0.2.0/24`, `port 80`) with their timeouts.
        members: Vec<(String, Option<u32>)>,
    },
    /// An acknowledgement: `Ok`, or the error as the daemon reports it.
    Ack {
        seq: u32,
        result: Result<(), String>,
    },
    Done {
        seq: u32,
    },
    Other {
        seq: u32,
    },
}

/// Decodes one datagram as the daemon's ipset socket does: its framing into
/// netlink messages, the ipset reply decoder, acknowledgements turned into the
/// daemon's errors. `Err` is the daemon's "malformed reply" error.
pub fn ipset_reply(datagram: &[u8]) -> Result<Vec<IpsetMessage>, String> {
    let decoded = messages(datagram).map_err(|e| e.to_string())?;
    Ok(decoded
        .into_iter()
        .map(|(seq, payload)| match payload {
            NetlinkPayload::InnerMessage(reply) => IpsetMessage::Reply {
                seq,
                protocol: reply.protocol,
                protocol_min: reply.protocol_min,
                revision: reply.revision,
                revision_min: reply.revision_min,
                members: reply
                    .members
                    .into_iter()
                    .map(|(element, timeout)| {
                        let text = match element {
                            Element::Net(ip, cidr) => format!("{ip}/{cidr}"),
                            Element::Port(port) => format!("port {port}"),
                        };
                        (text, timeout)
                    })
                    .collect(),
            },
            NetlinkPayload::Error(ack) => IpsetMessage::Ack {
                seq,
                result: acknowledged("request", &ack).map_err(|e| e.to_string()),
            },
            NetlinkPayload::Done(_) => IpsetMessage::Done { seq },
            _ => IpsetMessage::Other { seq },
        })
        .collect())
}

/// The protocol version the recorded requests speak (the kernel's, 7 since
/// Linux 3.x; the daemon agrees on it at start-up).
const PROTOCOL: u8 = 7;

/// Requests of every kind the daemon sends, framed as its socket frames them
/// (sequence numbers from 1), for recording the kernel's replies (the fuzz
/// corpus of `ipset_reply`): first the probes, whose replies give the set
/// type revisions that [`ipset_set_requests`] needs.
pub fn ipset_probe_requests() -> Vec<(&'static str, Vec<u8>)> {
    framed(vec![
        ("protocol", IpsetRequest::protocol(6)),
        (
            "type-hash-net",
            IpsetRequest::type_query(PROTOCOL, "hash:net", FAMILY_INET),
        ),
        (
            "type-bitmap-port",
            IpsetRequest::type_query(PROTOCOL, "bitmap:port", FAMILY_INET),
        ),
        (
            "type-unknown",
            IpsetRequest::type_query(PROTOCOL, "hash:nope", FAMILY_INET),
        ),
        ("header-missing", IpsetRequest::header(PROTOCOL, "fuzz-v4")),
    ])
}

/// The set requests of the daemon's life cycle on sets named `fuzz-*`:
/// create, header, add (nets of both families, a port), list, del, flush,
/// destroy (twice), and the refusals of a set that exists or is missing.
pub fn ipset_set_requests(nets_revision: u8, ports_revision: u8) -> Vec<(&'static str, Vec<u8>)> {
    let net = |ip: &str, cidr| Element::Net(ip.parse().expect("test address"), cidr);
    let (v4, v6, ports) = ("fuzz-v4", "fuzz-v6", "fuzz-ports");
    framed(vec![
        (
            "create-nets-v4",
            IpsetRequest::create_nets(PROTOCOL, v4, FAMILY_INET, nets_revision, 3600, 1024),
        ),
        (
            "create-nets-v6",
            IpsetRequest::create_nets(PROTOCOL, v6, FAMILY_INET6, nets_revision, 3600, 1024),
        ),
        (
            "create-ports",
            IpsetRequest::create_ports(PROTOCOL, ports, ports_revision, 3600),
        ),
        (
            "create-exists",
            IpsetRequest::create_ports(PROTOCOL, ports, ports_revision, 3600),
        ),
        ("header", IpsetRequest::header(PROTOCOL, v4)),
        (
            "add-v4",
            IpsetRequest::add(PROTOCOL, v4, net("192.0.2.0", 24), 65),
        ),
        (
            "add-v4-second",
            IpsetRequest::add(PROTOCOL, v4, net("198.18.7.0", 24), 600),
        ),
        (
            "add-v6",
            IpsetRequest::add(PROTOCOL, v6, net("2001:db8::", 64), 65),
        ),
        (
            "add-port",
            IpsetRequest::add(PROTOCOL, ports, Element::Port(443), 65),
        ),
        (
            "add-missing-set",
            IpsetRequest::add(PROTOCOL, "fuzz-none", Element::Port(80), 65),
        ),
        ("list-v4", IpsetRequest::list(PROTOCOL, v4)),
        ("list-v6", IpsetRequest::list(PROTOCOL, v6)),
        ("list-ports", IpsetRequest::list(PROTOCOL, ports)),
        ("list-missing", IpsetRequest::list(PROTOCOL, "fuzz-none")),
        (
            "del-v4",
            IpsetRequest::del(PROTOCOL, v4, net("192.0.2.0", 24)),
        ),
        ("flush-v6", IpsetRequest::flush(PROTOCOL, v6)),
        ("destroy-v4", IpsetRequest::destroy(PROTOCOL, v4)),
        ("destroy-v6", IpsetRequest::destroy(PROTOCOL, v6)),
        ("destroy-ports", IpsetRequest::destroy(PROTOCOL, ports)),
        ("destroy-again", IpsetRequest::destroy(PROTOCOL, v4)),
    ])
}

fn framed(requests: Vec<(&'static str, IpsetRequest)>) -> Vec<(&'static str, Vec<u8>)> {
    requests
        .into_iter()
        .zip(1u32..)
        .map(|((name, request), seq)| {
            let mut buf = Vec::new();
            frame(&mut buf, request, seq);
            (name, buf)
        })
        .collect()
}

/// Decodes one datagram as the `nftables` backend reads the kernel's answers
/// (`firewall/nftables/reply.rs`): each message's sequence number, status
/// and listed elements. `Err` is the backend's "malformed reply" error.
pub fn nft_reply(datagram: &[u8]) -> Result<Vec<crate::firewall::nftables::Decoded>, String> {
    crate::firewall::nftables::decode_answers(datagram).map_err(|e| e.to_string())
}

/// How the nf_tables recorder reads the kernel's answer to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NftExchange {
    /// A transaction: the kernel queues its refusals (none on success)
    /// before the send returns; read what is queued.
    Transaction,
    /// A dump or an acknowledged request: read until its DONE or status.
    Answered,
}

/// Datagrams of every kind the `nftables` backend sends, framed as it frames
/// them (sequence numbers from 1), for recording the kernel's replies (the
/// fuzz corpus of `nft_reply`): the generation probe, a dump of a missing
/// table, the table's install (and again: refused), elements of both
/// families and a port added, listed, a missing one deleted (refused), one
/// re-added, and the table removed (and again: refused).
pub fn nft_requests() -> Vec<(&'static str, NftExchange, Vec<u8>)> {
    use crate::firewall::nftables::ruleset::{self, Guard};
    use crate::firewall::nftables::wire::{self, Key};
    use crate::firewall::Subnet;
    use NftExchange::{Answered, Transaction};

    let net = |client: &str| Key::Net(Subnet::of_client(client.parse().expect("test address")));
    let minute = Duration::from_secs(65);
    let guard = Guard {
        device: "fuzz0",
        service_ports: &[443],
    };
    let mut seq = 1u32;
    let mut out = Vec::new();
    let mut answered = |name, bytes: fn(u32) -> Vec<u8>, seq: &mut u32| {
        out.push((name, Answered, bytes(*seq)));
        *seq += 1;
    };
    answered("generation", wire::generation, &mut seq);
    answered(
        "list-missing-table",
        |s| wire::list_elements("grants-v4", s),
        &mut seq,
    );
    let transactions = [
        ("install", ruleset::install(&guard)),
        ("install-again", ruleset::install(&guard)),
        (
            "add",
            vec![
                wire::add_elements("grants-v4", &[(net("192.0.2.7"), minute)]),
                wire::add_elements("grants-v6", &[(net("2001:db8::7"), minute)]),
                wire::add_elements("proxy-v4", &[(Key::Port(8080), minute)]),
            ],
        ),
        (
            "delete-missing",
            vec![wire::delete_element("grants-v4", net("198.18.7.1"))],
        ),
        (
            "readd",
            vec![
                wire::delete_element("grants-v4", net("192.0.2.7")),
                wire::readd_elements("grants-v4", &[(net("192.0.2.7"), minute * 2)]),
            ],
        ),
    ];
    for (name, requests) in transactions {
        out.push((name, Transaction, wire::transaction(&requests, seq)));
        seq += requests.len() as u32 + 2;
    }
    for (name, set) in [
        ("list-grants-v4", "grants-v4"),
        ("list-grants-v6", "grants-v6"),
        ("list-proxy-v4", "proxy-v4"),
    ] {
        out.push((name, Answered, wire::list_elements(set, seq)));
        seq += 1;
    }
    for name in ["remove", "remove-again"] {
        let requests = ruleset::remove();
        out.push((name, Transaction, wire::transaction(&requests, seq)));
        seq += requests.len() as u32 + 2;
    }
    out
}
