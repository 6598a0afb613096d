//! A tiny HTTP/1.1 server on 127.0.0.1 for tests that need one on the other
//! side (a fake Locate API, a page for the browser): one thread, one request
//! per connection, each answered by a function of the request line, and the
//! request targets remembered.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

/// An answer: status, `Content-Type`, body.
pub type Answer = (u16, &'static str, Vec<u8>);

/// A running stub; it serves until the test process ends.
#[derive(Debug)]
pub struct HttpStub {
    pub addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
}

impl HttpStub {
    /// Serves every request with `answer(method, target)`.
    pub fn start(answer: impl Fn(&str, &str) -> Answer + Send + 'static) -> HttpStub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the HTTP stub");
        let addr = listener.local_addr().expect("the stub's address");
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = targets.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let head = read_head(&mut stream);
                let mut words = head.split_whitespace();
                let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                seen.lock().unwrap().push(target.to_owned());
                let (status, content_type, body) = answer(method, target);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} -\r\nContent-Type: {content_type}\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            }
        });
        HttpStub { addr, targets }
    }

    /// The request targets (path and query) asked for so far.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

/// The request head, up to its blank line (at most 16 KiB).
fn read_head(stream: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}
