//! The token policy: whether tokens are required, the verify-key files, the
//! issuer, machine and subject tokens must name, and the single-use cache's
//! size. Required tokens need a verify key, a machine and a subject; verify
//! keys without required tokens still need a machine and subject. Plain data:
//! the key files are read when the daemon binds.

use std::path::PathBuf;

use anyhow::bail;

use super::Flags;

/// Token policy once flags are validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    pub required: bool,
    /// `--verify-key` files (none: no token can be verified).
    pub verify_keys: Vec<PathBuf>,
    /// Expected `iss`.
    pub issuer: String,
    /// Expected in `aud` (`--machine`; empty when not given).
    pub audience: String,
    pub subject: Option<String>,
    /// `--single-use-tokens`: how many used `jti`s the cache remembers.
    pub single_use: Option<usize>,
}

/// `--machine`, where given and not empty.
pub(super) fn machine(flags: &Flags) -> Option<String> {
    flags.machine.clone().filter(|m| !m.is_empty())
}

/// `--token-required`, `--verify-key`, `--machine`, `--subject`, `--issuer`,
/// `--single-use-tokens`.
pub(super) fn token_policy(flags: &Flags) -> anyhow::Result<TokenPolicy> {
    let has_keys = !flags.verify_key.is_empty();
    let subject = flags.subject.clone().filter(|s| !s.is_empty());
    let (no_machine, no_subject) = (machine(flags).is_none(), subject.is_none());
    if flags.token_required {
        if !has_keys {
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
    } else if has_keys {
        if no_machine {
            bail!("--machine is required with --verify-key");
        }
        if no_subject {
            bail!("--subject is required with --verify-key");
        }
    }
    Ok(TokenPolicy {
        required: flags.token_required,
        verify_keys: flags.verify_key.clone(),
        issuer: flags.issuer.clone(),
        audience: flags.machine.clone().unwrap_or_default(),
        subject,
        single_use: flags
            .single_use_tokens
            .then_some(flags.hooks.replay_cache_cap),
    })
}

#[cfg(test)]
mod tests {
    use super::super::flags::parse;
    use super::*;

    fn error(args: &[&str]) -> String {
        token_policy(&parse(args)).unwrap_err().to_string()
    }

    fn key() -> String {
        "--verify-key=/keys/locate.jwk.pub".to_owned()
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
    fn key_files_are_not_read_while_validating() {
        let policy = token_policy(&parse(&[
            "--verify-key=/nonexistent/key.jwk",
            "--machine=m",
            "--subject=s",
        ]))
        .unwrap();
        assert_eq!(
            policy.verify_keys,
            vec![PathBuf::from("/nonexistent/key.jwk")]
        );
        assert_eq!(policy.audience, "m");
        assert_eq!(policy.issuer, "locate");
    }

    #[test]
    fn tokens_not_required_need_nothing_else() {
        let policy = token_policy(&parse(&["--token-required=false"])).unwrap();
        assert!(!policy.required);
        assert!(
            policy.verify_keys.is_empty()
                && policy.subject.is_none()
                && policy.single_use.is_none()
        );
    }

    #[test]
    fn a_complete_policy_carries_keys_subject_and_the_single_use_cache() {
        let flags = parse(&[&key(), "--machine=m", "--subject=s", "--single-use-tokens"]);
        let policy = token_policy(&flags).unwrap();
        assert!(policy.required);
        assert_eq!(policy.verify_keys.len(), 1);
        assert_eq!(policy.subject.as_deref(), Some("s"));
        assert_eq!(policy.single_use, Some(common::filters::DEFAULT_REPLAY_CAP));
        assert_eq!(machine(&flags).as_deref(), Some("m"));
    }
}
