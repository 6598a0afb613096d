//! Transmit-rate admission: samples the device's transmitted bytes from
//! `/proc/net/dev` once a second and keeps the latest rate in bit/s.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::TxLimit;

const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The latest measured transmit rate of the guarded device.
#[derive(Debug)]
pub struct TxGate {
    max_bits_per_sec: u64,
    current: AtomicU64,
}

impl TxGate {
    /// Whether a new (non-monitoring) client must be turned away.
    pub fn over_limit(&self) -> bool {
        self.current.load(Ordering::Relaxed) > self.max_bits_per_sec
    }

    /// Starts sampling; fails at once if the device cannot be read.
    pub fn spawn(limit: &TxLimit, stop: CancellationToken) -> anyhow::Result<Arc<TxGate>> {
        let first = read_tx_bytes(&limit.proc_path, &limit.device)?;
        let gate = Arc::new(TxGate {
            max_bits_per_sec: limit.max_bits_per_sec,
            current: AtomicU64::new(0),
        });
        let (path, device, shared) = (limit.proc_path.clone(), limit.device.clone(), gate.clone());
        tokio::spawn(async move {
            sample_forever(path, device, first, shared, stop).await;
        });
        Ok(gate)
    }
}

async fn sample_forever(
    path: PathBuf,
    device: String,
    mut last_bytes: u64,
    gate: Arc<TxGate>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    ticker.tick().await;
    let mut last_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        match read_tx_bytes(&path, &device) {
            Ok(bytes) => {
                let now = tokio::time::Instant::now();
                let secs = now.duration_since(last_at).as_secs_f64().max(0.001);
                let bits = bytes.saturating_sub(last_bytes) as f64 * 8.0 / secs;
                gate.current.store(bits as u64, Ordering::Relaxed);
                last_bytes = bytes;
                last_at = now;
            }
            Err(e) => tracing::warn!(error = %e, device, "cannot sample transmit rate"),
        }
    }
}

/// Transmitted bytes of `device` from a `/proc/net/dev`-format file.
pub fn read_tx_bytes(path: &Path, device: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--tx-device: cannot read {}: {e}", path.display()))?;
    parse_tx_bytes(&text, device)
        .ok_or_else(|| anyhow::anyhow!("--tx-device: no device {device:?} in {}", path.display()))
}

fn parse_tx_bytes(text: &str, device: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, counters) = line.split_once(':')?;
        if name.trim() != device {
            return None;
        }
        // Eight receive counters come first; the ninth field is transmitted bytes.
        counters.split_whitespace().nth(8)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     100    0    0    0     0          0         0   654321     100    0    0    0     0       0          0
  eth0: 1000 10 0 0 0 0 0 0 987654321 20 0 0 0 0 0 0
";

    #[test]
    fn reads_the_transmit_bytes_of_the_named_device() {
        assert_eq!(parse_tx_bytes(SAMPLE, "eth0"), Some(987_654_321));
        assert_eq!(parse_tx_bytes(SAMPLE, "lo"), Some(654_321));
        assert_eq!(parse_tx_bytes(SAMPLE, "eth1"), None);
    }
}
