//! The transmit-rate gate (the Go `controller.TxController`): a [`TxGate`]
//! samples the guarded device's transmitted bytes from `/proc/net/dev` once a
//! second, and the filters refuse new clients with 503 while the rate is over
//! the limit. `monitoring` clients are exempt.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use warp::{Filter, Rejection};

use super::denied::Denied;
use super::token::Verified;

const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Why the device's counters cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no device {device:?} in {}", path.display())]
    NoDevice { path: PathBuf, device: String },
}

/// The latest measured transmit rate of one device, against its limit.
#[derive(Debug)]
pub struct TxGate {
    max_bits_per_sec: u64,
    current: AtomicU64,
}

impl TxGate {
    /// A gate with no sampler (rate 0 until [`TxGate::set_rate`]).
    pub fn new(max_bits_per_sec: u64) -> TxGate {
        TxGate {
            max_bits_per_sec,
            current: AtomicU64::new(0),
        }
    }

    /// Whether a new (non-exempt) client must be turned away now.
    pub fn over_limit(&self) -> bool {
        self.current.load(Ordering::Relaxed) > self.max_bits_per_sec
    }

    /// Records the latest measured rate, in bit/s.
    pub fn set_rate(&self, bits_per_sec: u64) {
        self.current.store(bits_per_sec, Ordering::Relaxed);
    }

    /// A gate fed by a tokio task sampling `device` in `proc_path` (a
    /// `/proc/net/dev`-format file) every second until `stop` completes. Fails at
    /// once if the device cannot be read.
    pub fn spawn(
        proc_path: &Path,
        device: &str,
        max_bits_per_sec: u64,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Arc<TxGate>, TxError> {
        let first = read_tx_bytes(proc_path, device)?;
        let gate = Arc::new(TxGate::new(max_bits_per_sec));
        let sampler = sample_forever(proc_path.to_owned(), device.to_owned(), first, gate.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = sampler => {}
                () = stop => {}
            }
        });
        Ok(gate)
    }
}

async fn sample_forever(path: PathBuf, device: String, mut last_bytes: u64, gate: Arc<TxGate>) {
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    ticker.tick().await;
    let mut last_at = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        match read_tx_bytes(&path, &device) {
            Ok(bytes) => {
                let now = tokio::time::Instant::now();
                let secs = now.duration_since(last_at).as_secs_f64().max(0.001);
                let bits = bytes.saturating_sub(last_bytes) as f64 * 8.0 / secs;
                gate.set_rate(bits as u64);
                last_bytes = bytes;
                last_at = now;
            }
            Err(e) => tracing::warn!(error = %e, device, "cannot sample transmit rate"),
        }
    }
}

/// Transmitted bytes of `device` from a `/proc/net/dev`-format file.
pub fn read_tx_bytes(path: &Path, device: &str) -> Result<u64, TxError> {
    let text = std::fs::read_to_string(path).map_err(|source| TxError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_tx_bytes(&text, device).ok_or_else(|| TxError::NoDevice {
        path: path.to_owned(),
        device: device.to_owned(),
    })
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

/// Who the gate lets through whatever the rate.
pub trait TxExempt {
    fn tx_exempt(&self) -> bool;
}

impl<T> TxExempt for Verified<T> {
    fn tx_exempt(&self) -> bool {
        self.is_monitoring()
    }
}

impl<T> TxExempt for Option<Verified<T>> {
    fn tx_exempt(&self) -> bool {
        self.as_ref().is_some_and(Verified::is_monitoring)
    }
}

/// The gate for everyone: rejects with [`Denied::TxOverLimit`] (503) while over.
pub fn transmit_rate(gate: Arc<TxGate>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::any()
        .and_then(move || {
            let over = gate.over_limit();
            std::future::ready(if over {
                Err(warp::reject::custom(Denied::TxOverLimit))
            } else {
                Ok(())
            })
        })
        .untuple_one()
}

/// The gate after `inner` (typically [`access_token`](super::access_token)):
/// what `inner` extracts passes through when it is exempt (a `monitoring`
/// token) or the rate is under the limit; with no gate, everything passes.
pub fn transmit_rate_unless_exempt<F, X>(
    gate: Option<Arc<TxGate>>,
    inner: F,
) -> impl Filter<Extract = (X,), Error = Rejection> + Clone
where
    F: Filter<Extract = (X,), Error = Rejection> + Clone,
    X: TxExempt + Send,
{
    inner.and_then(move |extracted: X| {
        let refused = match &gate {
            Some(gate) => !extracted.tx_exempt() && gate.over_limit(),
            None => false,
        };
        std::future::ready(if refused {
            Err(warp::reject::custom(Denied::TxOverLimit))
        } else {
            Ok(extracted)
        })
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

    /// The status `filter` answers for `GET /?access_token=token`.
    async fn status_of<F>(filter: F, token: &str) -> u16
    where
        F: Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
    {
        use hyper::service::Service as _;
        let request = warp::http::Request::get(format!("/?access_token={token}"))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let service = hyper_util::service::TowerToHyperService::new(warp::service(filter));
        service.call(request).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn over_the_limit_only_monitoring_passes() {
        use crate::filters::{access_token, handle_rejection, AccessPolicy, NoCustomClaims};
        use crate::{Algorithm, Audience, Claims, PrivateKey, Signer, Verifier};
        use warp::Reply as _;

        let key = PrivateKey::generate(Algorithm::EdDSA, "k").unwrap();
        let verifier = Arc::new(Verifier::new(vec![key.public_key()], "locate", "m").unwrap());
        let signer = Signer::new(key);
        let token = |sub: &str| {
            signer
                .sign(&Claims {
                    iss: "locate".into(),
                    sub: sub.into(),
                    aud: Audience::One("m".into()),
                    exp: i64::MAX / 2,
                    nbf: None,
                    iat: None,
                    jti: None,
                })
                .unwrap()
        };
        let gate = Arc::new(TxGate::new(1000));
        let filter = transmit_rate_unless_exempt(
            Some(gate.clone()),
            access_token::<NoCustomClaims>(AccessPolicy::new(verifier, "ndt")),
        )
        .map(|_| warp::reply().into_response())
        .recover(handle_rejection)
        .unify()
        .recover(|_| async { Ok::<_, std::convert::Infallible>(warp::reply().into_response()) })
        .unify();

        assert_eq!(status_of(filter.clone(), &token("ndt")).await, 200);
        gate.set_rate(1001);
        assert_eq!(status_of(filter.clone(), &token("ndt")).await, 503);
        assert_eq!(status_of(filter.clone(), &token("monitoring")).await, 200);
        // The token is checked first: a bad one is 401 whatever the rate.
        assert_eq!(status_of(filter, "a.b.c").await, 401);
    }

    #[test]
    fn the_gate_closes_above_the_limit() {
        let gate = TxGate::new(1000);
        assert!(!gate.over_limit());
        gate.set_rate(1000);
        assert!(!gate.over_limit());
        gate.set_rate(1001);
        assert!(gate.over_limit());
    }
}
