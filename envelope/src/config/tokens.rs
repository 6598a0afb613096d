//! The token policy: whether tokens are required, the verify keys (loaded here,
//! so a bad key file refuses start-up), the machine and subject they must name,
//! and the single-use cache. Required tokens need a verify key, a machine and a
//! subject; verify keys without required tokens still need a machine and subject.

use std::sync::Arc;

use anyhow::{bail, Context};

use super::Flags;

/// Token policy once flags are validated.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub required: bool,
    /// The verify keys (reloadable), when any `--verify-key` is given.
    pub verifier: Option<Arc<crate::keys::Keys>>,
    pub subject: Option<String>,
    /// `--single-use-tokens`: the cache of used `jti`s.
    pub replay: Option<Arc<common::filters::ReplayCache>>,
}

/// `--machine`, where given and not empty.
pub(super) fn machine(flags: &Flags) -> Option<String> {
    flags.machine.clone().filter(|m| !m.is_empty())
}

/// `--token-required`, `--verify-key`, `--machine`, `--subject`, `--issuer`,
/// `--single-use-tokens`.
pub(super) fn token_policy(flags: &Flags) -> anyhow::Result<TokenPolicy> {
    let verifier = verifier(flags)?;
    let subject = flags.subject.clone().filter(|s| !s.is_empty());
    let (no_machine, no_subject) = (machine(flags).is_none(), subject.is_none());
    if flags.token_required {
        if verifier.is_none() {
            bail!(
                "--verify-key is required when tokens are required (or set --token-required=false)"
            );
        }
        if no_machine {
            bail!("--machine is required when tokens are required");
        }
        if no_subject {
            bail!("--subject is required when tokens are required");
        }
    } else if verifier.is_some() {
        if no_machine {
            bail!("--machine is required with --verify-key");
        }
        if no_subject {
            bail!("--subject is required with --verify-key");
        }
    }
    Ok(TokenPolicy {
        required: flags.token_required,
        verifier,
        subject,
        replay: flags
            .single_use_tokens
            .then(|| Arc::new(common::filters::ReplayCache::new(flags.replay_cache_cap))),
    })
}

/// `--verify-key`: every file loaded, with `--issuer` and `--machine` as the
/// expected `iss` and `aud`.
fn verifier(flags: &Flags) -> anyhow::Result<Option<Arc<crate::keys::Keys>>> {
    if flags.verify_key.is_empty() {
        return Ok(None);
    }
    let machine = flags.machine.clone().unwrap_or_default();
    let keys = crate::keys::Keys::load(flags.verify_key.clone(), flags.issuer.clone(), machine)
        .context("--verify-key")?;
    Ok(Some(Arc::new(keys)))
}

#[cfg(test)]
mod tests {
    use super::super::{flags::parse, testdata};
    use super::*;

    fn error(args: &[&str]) -> String {
        token_policy(&parse(args)).unwrap_err().to_string()
    }

    fn key() -> String {
        format!("--verify-key={}", testdata("insecure-test-eddsa.jwk.pub"))
    }

    #[test]
    fn required_tokens_need_a_verify_key() {
        assert_eq!(
            error(&["--machine=m", "--subject=s"]),
            "--verify-key is required when tokens are required (or set --token-required=false)"
        );
    }

    #[test]
    fn required_tokens_need_a_machine() {
        assert_eq!(
            error(&[&key(), "--subject=s"]),
            "--machine is required when tokens are required"
        );
        assert_eq!(
            error(&[&key(), "--machine=", "--subject=s"]),
            "--machine is required when tokens are required"
        );
    }

    #[test]
    fn required_tokens_need_a_subject() {
        assert_eq!(
            error(&[&key(), "--machine=m"]),
            "--subject is required when tokens are required"
        );
    }

    #[test]
    fn a_verify_key_without_required_tokens_needs_a_machine() {
        assert_eq!(
            error(&["--token-required=false", &key(), "--subject=s"]),
            "--machine is required with --verify-key"
        );
    }

    #[test]
    fn a_verify_key_without_required_tokens_needs_a_subject() {
        assert_eq!(
            error(&["--token-required=false", &key(), "--machine=m"]),
            "--subject is required with --verify-key"
        );
    }

    #[test]
    fn an_unreadable_verify_key_names_the_flag() {
        let err = token_policy(&parse(&["--verify-key=/nonexistent/key.jwk"])).unwrap_err();
        assert_eq!(err.to_string(), "--verify-key");
    }

    #[test]
    fn tokens_not_required_need_nothing_else() {
        let policy = token_policy(&parse(&["--token-required=false"])).unwrap();
        assert!(!policy.required);
        assert!(policy.verifier.is_none() && policy.subject.is_none() && policy.replay.is_none());
    }

    #[test]
    fn a_complete_policy_carries_keys_subject_and_the_single_use_cache() {
        let flags = parse(&[&key(), "--machine=m", "--subject=s", "--single-use-tokens"]);
        let policy = token_policy(&flags).unwrap();
        assert!(policy.required);
        assert!(policy.verifier.is_some());
        assert_eq!(policy.subject.as_deref(), Some("s"));
        assert!(policy.replay.is_some());
        assert_eq!(machine(&flags).as_deref(), Some("m"));
    }
}
