//! What the kernel-reply recorders (`examples/record_ipset.rs`,
//! `examples/record_nft.rs`) share: the refusal to touch any namespace but a
//! fresh `unshare -n` one, and the seed files they write.

use std::path::{Path, PathBuf};

use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::Socket;

/// What every recorder starts with: the directory its first argument names
/// (`usage` otherwise), the check that this is a fresh namespace, and a
/// netfilter netlink socket bound in it.
pub fn start(usage: &str) -> Result<(PathBuf, Socket), String> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or(usage)?);
    only_in_a_fresh_namespace()?;
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| format!("netlink: {e}"))?;
    socket.bind_auto().map_err(|e| format!("bind: {e}"))?;
    Ok((dir, socket))
}

/// A fresh `unshare -n` namespace has `lo` and nothing else: anywhere else
/// the recorders would change a real firewall.
pub fn only_in_a_fresh_namespace() -> Result<(), String> {
    let dev = std::fs::read_to_string("/proc/self/net/dev").map_err(|e| e.to_string())?;
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(str::trim)
        .collect();
    if interfaces == ["lo"] {
        Ok(())
    } else {
        Err(format!(
            "refusing to touch the firewall of a namespace with interfaces {interfaces:?}: \
             run under `unshare -n`"
        ))
    }
}

/// Writes each datagram of one exchange as `DIR/kernel-NAME-N`.
pub fn save(dir: &Path, name: &str, replies: &[Vec<u8>]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (i, datagram) in replies.iter().enumerate() {
        let path = dir.join(format!("kernel-{name}-{}", i + 1));
        std::fs::write(&path, datagram).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("{} ({} bytes)", path.display(), datagram.len());
    }
    Ok(())
}
