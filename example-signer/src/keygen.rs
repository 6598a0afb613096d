//! `example-signer keygen`: a fresh key pair written as go-jose `jwk-keygen` files.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use common::{Algorithm, PrivateKey};

const PRIVATE_MODE: u32 = 0o600;
const PUBLIC_MODE: u32 = 0o644;

/// Generate a signing key: the private JWK goes to PREFIX (mode 0600), the public
/// JWK to PREFIX.pub.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Signature algorithm.
    #[arg(long, value_name = "ALG", value_parser = algorithm_parser())]
    pub alg: Algorithm,
    /// Key ID, put in the JWK and in the header of every token signed with it.
    #[arg(long, value_name = "ID")]
    pub kid: String,
    /// Output path of the private key [default: jwk_sig_<ALG>_<ID>, as jwk-keygen names it].
    #[arg(long, value_name = "PREFIX")]
    pub out: Option<PathBuf>,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

fn algorithm_parser() -> impl TypedValueParser<Value = Algorithm> {
    PossibleValuesParser::new(Algorithm::ALL.map(Algorithm::as_str))
        .try_map(|name| name.parse::<Algorithm>())
}

pub fn run(args: &KeygenArgs) -> Result<()> {
    let private_path = args
        .out
        .clone()
        .unwrap_or_else(|| default_prefix(args.alg, &args.kid));
    let public_path = public_path_for(&private_path);
    if !args.force {
        // Both checks come first so that a refusal leaves nothing half-written.
        refuse_existing(&private_path)?;
        refuse_existing(&public_path)?;
    }
    let key = PrivateKey::generate(args.alg, &args.kid)
        .with_context(|| format!("cannot generate an {} key", args.alg))?;
    let public_json = key.public_key().to_jwk_json();
    write_key_file(&private_path, &key.to_jwk_json(), PRIVATE_MODE, args.force)?;
    if let Err(e) = write_key_file(&public_path, &public_json, PUBLIC_MODE, args.force) {
        if !args.force {
            // Only a file created a moment ago by this run is removed here.
            let _ = fs::remove_file(&private_path);
        }
        return Err(e);
    }
    eprintln!(
        "wrote private key {} and public key {}",
        private_path.display(),
        public_path.display()
    );
    Ok(())
}

/// go-jose `jwk-keygen` names its output `jwk_<use>_<alg>_<kid>`.
fn default_prefix(alg: Algorithm, kid: &str) -> PathBuf {
    PathBuf::from(format!("jwk_sig_{alg}_{kid}"))
}

fn public_path_for(private_path: &Path) -> PathBuf {
    let mut name = private_path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn refuse_existing(path: &Path) -> Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        bail!(
            "{} already exists; use --force to replace it",
            path.display()
        );
    }
    Ok(())
}

/// Writes `json` to a file that has `mode` from its creation on.
///
/// An existing file is removed first rather than truncated: `open` keeps the old
/// file's permissions, which would leave a private key in a file as wide as before.
fn write_key_file(path: &Path, json: &str, mode: u32, replace: bool) -> Result<()> {
    if replace {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot replace {}", path.display()));
            }
            _ => {}
        }
    }
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        // The umask may have narrowed `mode`; set it exactly, through the open handle.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(json.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_prefix_follows_jwk_keygen() {
        assert_eq!(
            default_prefix(Algorithm::ES256, "k1"),
            PathBuf::from("jwk_sig_ES256_k1")
        );
        assert_eq!(
            public_path_for(Path::new("dir/key")),
            PathBuf::from("dir/key.pub")
        );
    }
}
