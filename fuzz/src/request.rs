//! The text form of the HTTP inputs, close to a request head so that seeds
//! read like requests and the fuzzer's dictionary of them stays useful:
//! - access: `TARGET` on the first line, then `Name: value` header lines;
//! - admin: `METHOD TARGET [UID]` on the first line, then the body, as is.

/// A request for the access endpoint: its target (path and query) and headers.
#[derive(Debug, PartialEq, Eq)]
pub struct AccessInput<'a> {
    pub target: &'a str,
    pub headers: Vec<(&'a [u8], &'a [u8])>,
}

/// A request for the admin API.
#[derive(Debug, PartialEq, Eq)]
pub struct AdminInput<'a> {
    pub method: &'a [u8],
    pub target: &'a str,
    /// The peer's uid (root when the line names none).
    pub uid: u32,
    pub body: &'a [u8],
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (trim_cr(&data[..i]), &data[i + 1..]),
        None => (trim_cr(data), &[]),
    }
}

/// `None` when the target is not UTF-8 (hyper refuses such a request line).
pub fn access(data: &[u8]) -> Option<AccessInput<'_>> {
    let (target, rest) = split_line(data);
    let target = std::str::from_utf8(target).ok()?;
    let headers = rest
        .split(|&b| b == b'\n')
        .map(trim_cr)
        .filter(|line| !line.is_empty())
        .map(|line| match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], line[i + 1..].trim_ascii_start()),
            None => (line, &[][..]),
        })
        .collect();
    Some(AccessInput { target, headers })
}

/// `None` when the first line is not `METHOD TARGET [UID]`.
pub fn admin(data: &[u8]) -> Option<AdminInput<'_>> {
    let (line, body) = split_line(data);
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    let (method, target) = (words.next()?, words.next()?);
    let uid = match words.next() {
        Some(uid) => uid.parse().ok()?,
        None => 0,
    };
    words.next().is_none().then_some(AdminInput {
        method: method.as_bytes(),
        target,
        uid,
        body,
    })
}

/// Checks the two forms on examples; the targets run it at start-up.
pub fn self_check() {
    let input = access(b"/p?q=1\r\nUpgrade: websocket\nX:\n\nbare").expect("access form");
    assert_eq!(input.target, "/p?q=1");
    assert_eq!(
        input.headers,
        [
            (&b"Upgrade"[..], &b"websocket"[..]),
            (b"X", b""),
            (b"bare", b"")
        ]
    );
    let input = admin(b"DELETE /v1/grants?ip=192.0.2.7 1000\nbody\n").expect("admin form");
    assert_eq!(input.method, b"DELETE");
    assert_eq!(input.target, "/v1/grants?ip=192.0.2.7");
    assert_eq!((input.uid, input.body), (1000, &b"body\n"[..]));
    assert_eq!(admin(b"GET /v1/status").map(|i| i.uid), Some(0));
    assert_eq!(admin(b"GET"), None);
    assert_eq!(admin(b"GET / x"), None);
}
