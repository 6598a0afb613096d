//! Signing mode: mint one access token and print it as an envelope URL.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use common::goflags::parse_duration;
use common::jwk::load_private_key;
use common::{Claims, Signer};

pub const DEFAULT_URL: &str = "ws://localhost:8880/v0/envelope/access";

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Private JWK to sign with (as written by `keygen`).
    #[arg(long, value_name = "FILE")]
    pub private: PathBuf,
    /// Machine the token is for (the `aud` claim).
    #[arg(long, value_name = "NAME")]
    pub machine: String,
    /// Service the token is for (the `sub` claim).
    #[arg(long, value_name = "NAME")]
    pub subject: String,
    /// Issuer (the `iss` claim).
    #[arg(long, value_name = "NAME", default_value = "locate")]
    pub issuer: String,
    /// How long the token is valid, as a Go duration in whole seconds (90s, 2m, 1h30m).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_expiry)]
    pub expiry: i64,
    /// Envelope URL the token is appended to as `access_token`.
    #[arg(long, value_name = "BASE", default_value = DEFAULT_URL)]
    pub url: String,
    /// Print only the token, not the URL.
    #[arg(long)]
    pub token_only: bool,
}

/// Token lifetimes are whole seconds because `exp` is an integer claim; rounding
/// `500ms` silently would mint a token that lives for a different time than asked.
fn parse_expiry(text: &str) -> Result<i64, String> {
    let duration = parse_duration(text)?;
    if duration.subsec_nanos() != 0 || duration.as_secs() < 1 {
        return Err(format!(
            "expiry must be whole seconds and at least 1s (got {text:?})"
        ));
    }
    i64::try_from(duration.as_secs()).map_err(|_| format!("expiry {text:?} is too large"))
}

pub fn run(args: &SignArgs) -> Result<()> {
    let key = load_private_key(&args.private)?;
    let claims = claims_at(args, unix_now()?)?;
    let token = Signer::new(key)
        .sign(&claims)
        .context("cannot sign the token")?;
    eprintln!("{}", serde_json::to_string_pretty(&claims)?);
    if args.token_only {
        println!("{token}");
    } else {
        println!("{}", url_with_token(&args.url, &token));
    }
    Ok(())
}

fn claims_at(args: &SignArgs, now: i64) -> Result<Claims> {
    let exp = now
        .checked_add(args.expiry)
        .context("expiry is too large")?;
    Ok(Claims {
        nbf: Some(now),
        jti: Some(format!("{:032x}", rand::random::<u128>())),
        ..Claims::for_machine(&args.issuer, &args.subject, &args.machine, now, exp)
    })
}

fn unix_now() -> Result<i64> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    Ok(i64::try_from(since_epoch.as_secs())?)
}

/// A JWT is base64url and dots only, so it needs no escaping in a query.
fn url_with_token(base: &str, token: &str) -> String {
    let separator = match base {
        b if b.ends_with('?') || b.ends_with('&') => "",
        b if b.contains('?') => "&",
        _ => "?",
    };
    format!("{base}{separator}access_token={token}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::Audience;

    #[test]
    fn token_is_appended_as_a_query_parameter() {
        assert_eq!(url_with_token("ws://h/p", "t"), "ws://h/p?access_token=t");
        assert_eq!(
            url_with_token("ws://h/p?x=1", "t"),
            "ws://h/p?x=1&access_token=t"
        );
        assert_eq!(url_with_token("ws://h/p?", "t"), "ws://h/p?access_token=t");
    }

    #[test]
    fn expiry_must_be_whole_positive_seconds() {
        assert_eq!(parse_expiry("2m"), Ok(120));
        assert_eq!(parse_expiry("1h30m"), Ok(5400));
        assert_eq!(
            parse_expiry("1500ms").unwrap_err(),
            "expiry must be whole seconds and at least 1s (got \"1500ms\")"
        );
        for bad in ["500ms", "0", "0s", "-1m", "1.5s", "2x"] {
            assert!(parse_expiry(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn claims_follow_the_flags() {
        let args = SignArgs {
            private: PathBuf::from("k"),
            machine: "mlab1-test0".into(),
            subject: "ndt".into(),
            issuer: "locate".into(),
            expiry: 120,
            url: DEFAULT_URL.into(),
            token_only: false,
        };
        let claims = claims_at(&args, 1000).unwrap();
        assert_eq!(claims.aud, Audience::One("mlab1-test0".into()));
        assert_eq!(
            (claims.exp, claims.nbf, claims.iat),
            (1120, Some(1000), Some(1000))
        );
        assert_eq!(claims.jti.unwrap().len(), 32);
        assert!(claims_at(
            &SignArgs {
                expiry: i64::MAX,
                ..args
            },
            1000
        )
        .is_err());
    }
}
