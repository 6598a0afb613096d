//! Shell completions (bash, zsh, fish) from the clap definitions, named as
//! each shell's vendor directory expects: `bash/NAME`, `zsh/_NAME`,
//! `fish/NAME.fish`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap_complete::Shell;

use crate::binaries::Binary;

/// (shell, subdirectory, file name for a binary).
const SHELLS: [(Shell, &str, fn(&str) -> String); 3] = [
    (Shell::Bash, "bash", |name| name.to_owned()),
    (Shell::Zsh, "zsh", |name| format!("_{name}")),
    (Shell::Fish, "fish", |name| format!("{name}.fish")),
];

/// Writes `binary`'s completion script for every shell under `dir`.
pub fn write_scripts(binary: &Binary, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (shell, subdir, file_name) in SHELLS {
        let mut command = (binary.command)();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, binary.name, &mut script);
        let shell_dir = dir.join(subdir);
        std::fs::create_dir_all(&shell_dir)
            .with_context(|| format!("cannot create {}", shell_dir.display()))?;
        let path = shell_dir.join(file_name(binary.name));
        std::fs::write(&path, script)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
