//! The admin socket file: its directory, a lock file beside it so a stale socket
//! is replaced only when no live envelope holds it (and `--cleanup` never runs
//! beside a live one), permissions that are never wider than asked (0600, or
//! 0660 for `--admin-group`), and the peer check. As OpenSSH's StrictModes: an
//! existing directory must be ours and writable by no one else, and the lock
//! is opened without following a symlink and must be ours, so another local
//! user can neither steer where root writes nor hold our lock.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{Gid, Group, Uid, User};
use tokio::net::UnixListener;

/// A bound admin socket; the lock is held for as long as this lives.
#[derive(Debug)]
pub struct AdminSocket {
    pub listener: UnixListener,
    pub access: PeerPolicy,
    pub file: SocketFile,
}

/// The socket's file and the lock beside it: held until the daemon is done,
/// then the socket file is removed (the lock file stays, unlocked).
#[derive(Debug)]
pub struct SocketFile {
    pub path: PathBuf,
    _lock: AdminLock,
}

impl SocketFile {
    /// The last step of a shutdown: the socket file goes, and the lock is let go.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Who may talk to the admin API.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    pub(crate) own_uid: Uid,
    pub(crate) group: Option<Group>,
}

impl PeerPolicy {
    /// root, the daemon's own user, or a member of the admin group.
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        let uid = Uid::from_raw(uid);
        if uid.is_root() || uid == self.own_uid {
            return true;
        }
        let Some(group) = &self.group else {
            return false;
        };
        if Gid::from_raw(gid) == group.gid {
            return true;
        }
        match User::from_uid(uid) {
            Ok(Some(user)) => user.gid == group.gid || group.mem.contains(&user.name),
            _ => false,
        }
    }
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    socket.with_file_name(name)
}

/// The lock beside the admin socket. Whoever holds it owns the socket path and
/// the firewall guard; it is let go when this is dropped (or the process ends).
#[derive(Debug)]
pub struct AdminLock {
    _file: File,
}

impl AdminLock {
    /// Takes the lock of the socket at `socket`, creating its directory (0700,
    /// or 0750 for `group`) when it is missing.
    pub fn take(socket: &Path, group: Option<&Group>) -> anyhow::Result<AdminLock> {
        let dir = socket_dir(socket);
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(if group.is_some() { 0o750 } else { 0o700 })
                .create(dir)
                .with_context(|| {
                    format!("--admin-socket: cannot create directory {}", dir.display())
                })?;
            if let Some(group) = group {
                nix::unistd::chown(dir, None, Some(group.gid)).with_context(|| {
                    format!("--admin-socket: cannot give {} to its group", dir.display())
                })?;
            }
        }
        check_dir(dir)?;
        Self::lock(socket, true)
    }

    /// For `--cleanup`: takes the lock, or `None` when its directory or file
    /// does not exist (then no envelope can be running there). Creates nothing.
    pub fn take_existing(socket: &Path) -> anyhow::Result<Option<AdminLock>> {
        let dir = socket_dir(socket);
        if !dir.exists() || !lock_path(socket).exists() {
            return Ok(None);
        }
        check_dir(dir)?;
        Self::lock(socket, false).map(Some)
    }

    fn lock(socket: &Path, create: bool) -> anyhow::Result<AdminLock> {
        let lock_file = lock_path(socket);
        let file = OpenOptions::new()
            .create(create)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock_file)
            .with_context(|| {
                format!(
                    "--admin-socket: cannot open lock file {} (a symlink is refused)",
                    lock_file.display()
                )
            })?;
        let meta = file.metadata().with_context(|| {
            format!(
                "--admin-socket: cannot read lock file {}",
                lock_file.display()
            )
        })?;
        let me = Uid::effective().as_raw();
        if !meta.is_file() || meta.uid() != me {
            bail!(
                "--admin-socket: lock file {} is not a regular file of this user (uid {me}); \
                 remove it",
                lock_file.display()
            );
        }
        if file.try_lock().is_err() {
            bail!(
                "--admin-socket {}: another envelope is running and holds it (lock {})",
                socket.display(),
                lock_file.display()
            );
        }
        Ok(AdminLock { _file: file })
    }
}

fn socket_dir(socket: &Path) -> &Path {
    socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// An existing socket directory must be this user's and writable by no one
/// else: whoever can write there can swap the socket or plant the lock.
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("--admin-socket: cannot read directory {}", dir.display()))?;
    let me = Uid::effective().as_raw();
    if meta.uid() != me {
        bail!(
            "--admin-socket: directory {} belongs to uid {}, not to this user (uid {me})",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "--admin-socket: directory {} is writable by its group or others (mode {:o}); \
             use a directory only its owner can write",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

impl AdminSocket {
    pub fn bind(path: &Path, group: Option<&str>) -> anyhow::Result<AdminSocket> {
        let group = match group {
            None => None,
            Some(name) => Some(
                Group::from_name(name)
                    .with_context(|| format!("--admin-group {name}"))?
                    .with_context(|| format!("--admin-group {name}: no such group"))?,
            ),
        };
        let lock = AdminLock::take(path, group.as_ref())?;
        // Holding the lock, any socket file here is a dead instance's leftover.
        match std::fs::remove_file(path) {
            Ok(()) => tracing::info!(path = %path.display(), "replaced a stale admin socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("--admin-socket: cannot remove stale {}", path.display())
                })
            }
        }
        // The socket is born owner-only; it is widened to the group only after chown.
        let previous = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        umask(previous);
        let listener = bound
            .with_context(|| format!("--admin-socket: cannot listen on {}", path.display()))?;
        if let Some(group) = &group {
            nix::unistd::chown(path, None, Some(group.gid)).with_context(|| {
                format!(
                    "--admin-socket: cannot give {} to group {}",
                    path.display(),
                    group.name
                )
            })?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).with_context(
                || format!("--admin-socket: cannot set mode of {}", path.display()),
            )?;
        }
        Ok(AdminSocket {
            listener,
            access: PeerPolicy {
                own_uid: Uid::effective(),
                group,
            },
            file: SocketFile {
                path: path.to_owned(),
                _lock: lock,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_sits_beside_the_socket() {
        assert_eq!(
            lock_path(Path::new("/run/envelope/admin.sock")),
            PathBuf::from("/run/envelope/admin.sock.lock")
        );
    }

    #[test]
    fn root_and_own_user_are_allowed_others_are_not() {
        let policy = PeerPolicy {
            own_uid: Uid::from_raw(1234),
            group: None,
        };
        assert!(policy.allows(0, 0));
        assert!(policy.allows(1234, 1234));
        assert!(!policy.allows(65534, 65534));
    }

    #[tokio::test]
    async fn socket_is_owner_only_and_a_second_bind_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.sock");
        let first = AdminSocket::bind(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let err = AdminSocket::bind(&path, None).unwrap_err().to_string();
        assert!(err.contains("another envelope is running"), "{err}");
        drop(first);
        // The file is still there (as after SIGKILL); with the lock free it is replaced.
        assert!(path.exists());
        AdminSocket::bind(&path, None).unwrap();
    }
}
