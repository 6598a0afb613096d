//! An error with every cause behind it, on one line (`outer: inner: innermost`):
//! the one formatter the daemon's logs and the admin API's error bodies use, so
//! the errno or the kernel's own words always reach the operator.

use std::error::Error;
use std::fmt;

/// `error` and its sources, outermost first.
pub fn causes<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// Displays an error and its causes joined by `": "`; a cause whose text the
/// error before it already ends with (a wrapper that repeats its source) is
/// written once.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = String::new();
        for (i, cause) in causes(self.0).enumerate() {
            let text = cause.to_string();
            if i > 0 && last.ends_with(&text) {
                continue;
            }
            if i > 0 {
                f.write_str(": ")?;
            }
            f.write_str(&text)?;
            last = text;
        }
        Ok(())
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// [`Chain`] of any error, e.g. `tracing::warn!(error = %chain(&e), …)`.
pub fn chain<'a, E: Error + 'static>(error: &'a E) -> Chain<'a> {
    Chain(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("open journal /x")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn every_cause_is_written_down_to_the_errno() {
        let e = Outer(std::io::Error::from_raw_os_error(13));
        assert_eq!(
            chain(&e).to_string(),
            "open journal /x: Permission denied (os error 13)"
        );
        assert_eq!(causes(&e).count(), 2);
    }

    #[test]
    fn a_cause_already_in_the_text_is_not_written_twice() {
        let e = Repeats(std::io::Error::other("boom"));
        assert_eq!(chain(&e).to_string(), "wrapped: boom");
    }
}
