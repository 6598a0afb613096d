//! Shell completions (bash, zsh, fish) from the clap definitions, named as
//! each shell's vendor directory expects: `bash/NAME`, `zsh/_NAME`,
//! `fish/NAME.fish`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap_complete::Shell;

use crate::binaries::Binary;

const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "bash"),
    (Shell::Zsh, "zsh"),
    (Shell::Fish, "fish"),
];

/// The file name each shell's completion loader looks for.
fn file_name(shell: Shell, binary: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{binary}"),
        Shell::Fish => format!("{binary}.fish"),
        _ => binary.to_owned(),
    }
}

/// Writes `binary`'s completion script for every shell under `dir`.
pub fn write_scripts(binary: &Binary, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (shell, subdir) in SHELLS {
        let mut command = (binary.command)();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, binary.name, &mut script);
        let shell_dir = dir.join(subdir);
        std::fs::create_dir_all(&shell_dir)
            .with_context(|| format!("cannot create {}", shell_dir.display()))?;
        let path = shell_dir.join(file_name(shell, binary.name));
        std::fs::write(&path, script)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
