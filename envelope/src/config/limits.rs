//! Limits on holding and admitting clients: the shortest and longest hold of a
//! session (`--timeout` may not exceed `--max-hold`), and the transmit-rate gate
//! (`--tx-device` and `--tx-max-rate` together, a rate of 0 meaning no gate).

use std::path::PathBuf;

use anyhow::bail;

use super::Flags;

/// The transmit-rate gate on admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxLimit {
    pub device: String,
    pub max_bits_per_sec: u64,
    pub proc_path: PathBuf,
}

/// `--timeout` and `--max-hold`.
pub(super) fn check_hold_times(flags: &Flags) -> anyhow::Result<()> {
    if flags.max_hold < flags.timeout {
        bail!(
            "--max-hold ({:?}) is shorter than --timeout ({:?})",
            flags.max_hold,
            flags.timeout
        );
    }
    Ok(())
}

/// `--tx-device` and `--tx-max-rate`.
pub(super) fn tx_limit(flags: &Flags) -> anyhow::Result<Option<TxLimit>> {
    Ok(match (&flags.tx_device, flags.tx_max_rate) {
        (Some(device), Some(max)) if max > 0 => Some(TxLimit {
            device: device.clone(),
            max_bits_per_sec: max,
            proc_path: flags.hooks.tx_proc_path.clone(),
        }),
        (Some(_), None) => bail!("--tx-device needs --tx-max-rate"),
        (None, Some(max)) if max > 0 => bail!("--tx-max-rate needs --tx-device"),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::flags::parse;
    use super::*;

    #[test]
    fn max_hold_shorter_than_timeout_is_refused() {
        let err = check_hold_times(&parse(&["--timeout=2m", "--max-hold=1m"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--max-hold (60s) is shorter than --timeout (120s)"
        );
        check_hold_times(&parse(&["--timeout=1m", "--max-hold=1m"])).unwrap();
        check_hold_times(&parse(&[])).unwrap();
    }

    #[test]
    fn tx_device_needs_tx_max_rate() {
        let err = tx_limit(&parse(&["--tx-device=eth0"])).unwrap_err();
        assert_eq!(err.to_string(), "--tx-device needs --tx-max-rate");
    }

    #[test]
    fn tx_max_rate_needs_tx_device() {
        let err = tx_limit(&parse(&["--tx-max-rate=1000"])).unwrap_err();
        assert_eq!(err.to_string(), "--tx-max-rate needs --tx-device");
    }

    #[test]
    fn tx_max_rate_zero_means_no_limit() {
        assert!(tx_limit(&parse(&["--tx-max-rate=0"])).unwrap().is_none());
        let flags = parse(&["--tx-device=eth0", "--tx-max-rate=0"]);
        assert!(tx_limit(&flags).unwrap().is_none());
        assert!(tx_limit(&parse(&[])).unwrap().is_none());
    }

    #[test]
    fn tx_device_and_rate_gate_admission() {
        let flags = parse(&["-txcontroller.device=eth1", "-txcontroller.max-rate=5000"]);
        let limit = tx_limit(&flags).unwrap().unwrap();
        assert_eq!(limit.device, "eth1");
        assert_eq!(limit.max_bits_per_sec, 5000);
        assert_eq!(limit.proc_path, PathBuf::from("/proc/net/dev"));
    }
}
