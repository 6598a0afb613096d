//! Reading a file an operator names (a verify key, a TLS certificate or key)
//! without trusting what sits at its path: only a regular file is read, at most
//! [`MAX_FILE_BYTES`], and opening never waits (a FIFO with no writer would
//! block `open` forever; `/dev/zero` would never end). A file that breaks these
//! rules is an error naming what it is.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Key and certificate files are small; anything bigger is not one.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The whole of a small regular file.
pub fn read_small_file(path: &Path) -> io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a
    // writer; on a regular file it changes nothing.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    check_kind(&file)?;
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file that grew past the limit.
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// [`read_small_file`] as UTF-8 text.
pub fn read_small_text(path: &Path) -> io::Result<String> {
    String::from_utf8(read_small_file(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn check_kind(file: &File) -> io::Result<()> {
    let meta = file.metadata()?;
    let kind = meta.file_type();
    let what = if kind.is_file() {
        if meta.len() > MAX_FILE_BYTES {
            return Err(too_large());
        }
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}, not a regular file"),
    ))
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than {} KiB", MAX_FILE_BYTES >> 10),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_regular_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.jwk");
        std::fs::write(&path, b"{\"kty\":\"OKP\"}").unwrap();
        assert_eq!(read_small_text(&path).unwrap(), "{\"kty\":\"OKP\"}");
    }

    #[test]
    fn a_fifo_is_refused_at_once_without_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.jwk");
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let err = read_small_file(&path).unwrap_err();
        assert_eq!(err.to_string(), "a FIFO, not a regular file");
    }

    #[test]
    fn devices_and_directories_are_refused() {
        let err = read_small_file(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err.to_string(), "a character device, not a regular file");
        let dir = tempfile::tempdir().unwrap();
        let err = read_small_file(dir.path()).unwrap_err();
        assert_eq!(err.to_string(), "a directory, not a regular file");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.pem");
        let file = File::create(&path).unwrap();
        file.set_len(100 << 20).unwrap();
        let err = read_small_file(&path).unwrap_err();
        assert_eq!(err.to_string(), "larger than 1024 KiB");
        file.set_len(MAX_FILE_BYTES).unwrap();
        assert_eq!(read_small_file(&path).unwrap().len() as u64, MAX_FILE_BYTES);
    }

    #[test]
    fn a_symlink_is_followed_to_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("key.jwk");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(read_small_file(&link).is_err());
        std::fs::write(dir.path().join("real"), b"x").unwrap();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("real", &link).unwrap();
        assert_eq!(read_small_file(&link).unwrap(), b"x");
    }
}
