//! One file per subcommand.

pub mod events;
pub mod lifecycle;
pub mod list;
pub mod reload;
pub mod revoke;
pub mod status;

use std::time::Duration;

/// `1h02m`, `5m03s`, `12s` — short enough for a table column.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_secs(12)), "12s");
        assert_eq!(human(Duration::from_secs(303)), "5m03s");
        assert_eq!(human(Duration::from_secs(3720)), "1h02m");
    }
}
