//! Traffic between the namespaces: running a closure inside one, connecting
//! from the client (optionally from a chosen source address), asking whether the
//! firewall lets the client reach a port, and a test service to reach.

use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::wait::{eventually_async, EVENTUALLY};
use crate::NetPair;

impl NetPair {
    /// Runs `f` on a fresh thread that has joined the namespace `ns`. Sockets
    /// created there stay in that namespace after the thread ends.
    pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// A TCP connection from the client namespace (optionally from `local`).
    pub fn connect_from_client(
        &self,
        local: Option<IpAddr>,
        to: SocketAddr,
    ) -> io::Result<TcpStream> {
        Self::in_ns(&self.client, move || connect(local, to))
    }

    /// A TCP connection made inside the server namespace.
    pub fn connect_in_server(&self, to: SocketAddr) -> io::Result<TcpStream> {
        Self::in_ns(&self.server, move || connect(None, to))
    }

    /// Whether a TCP connection from the client to `to` is accepted (`true`) or
    /// refused (`false`); any other outcome (e.g. a timeout) panics.
    pub fn client_can_reach(&self, to: SocketAddr) -> bool {
        match self.connect_from_client(None, to) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => false,
            Err(e) => panic!("connect {to} from the client: unexpected {e}"),
        }
    }

    /// Waits ([`EVENTUALLY`]) until `client_can_reach(to) == want`. Each probe
    /// blocks its worker through `block_in_place`: call it from a multi-thread
    /// runtime.
    pub async fn wait_reach(&self, to: SocketAddr, want: bool) {
        let what = format!("{to} {}", if want { "accepted" } else { "refused" });
        eventually_async(EVENTUALLY, &what, || async {
            tokio::task::block_in_place(|| self.client_can_reach(to)) == want
        })
        .await
    }

    /// A TCP service in the server namespace on `port` (IPv4 and IPv6), which
    /// accepts and closes connections until dropped (at most `lifetime`).
    pub fn listener(&self, port: u16, lifetime: Duration) -> Listener {
        Self::listener_in(&self.server, port, lifetime)
    }

    /// Like [`NetPair::listener`], in the namespace `ns`.
    pub fn listener_in(ns: &str, port: u16, lifetime: Duration) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Self::in_ns(ns, move || {
            let v4 = TcpListener::bind(("0.0.0.0", port)).unwrap();
            let v6 =
                socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
            v6.set_only_v6(true).unwrap();
            v6.set_reuse_address(true).unwrap();
            v6.bind(&SocketAddr::from(([0u16; 8], port)).into())
                .unwrap();
            v6.listen(128).unwrap();
            let v6: TcpListener = v6.into();
            (v4, v6)
        });
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (v4, v6) = sockets;
            v4.set_nonblocking(true).unwrap();
            v6.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + lifetime;
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                let mut idle = true;
                for listener in [&v4, &v6] {
                    if let Ok((stream, _)) = listener.accept() {
                        drop(stream);
                        idle = false;
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Listener {
            stop,
            thread: Some(thread),
        }
    }
}

/// A running test service; stops on drop.
#[derive(Debug)]
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn connect(local: Option<IpAddr>, to: SocketAddr) -> io::Result<TcpStream> {
    let domain = if to.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    if let Some(local) = local {
        socket.bind(&SocketAddr::new(local, 0).into())?;
    }
    socket.connect_timeout(&to.into(), Duration::from_secs(3))?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    Ok(stream)
}
