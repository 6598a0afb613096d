//! Man pages (section 1) from the clap definitions: one page per binary and one
//! per visible subcommand (`envelopectl-list.1`, as git names them), each with
//! clap_mangen's usual sections plus the Go-style spellings the binary accepts
//! (which clap hides) and a SEE ALSO naming the other pages.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use crate::binaries::Binary;

/// Writes every page of `binary` into `dir`; returns the files written.
pub fn write_pages(binary: &Binary, see_also: &[&str], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut command = (binary.command)()
        .name(binary.name)
        .disable_help_subcommand(true);
    command.build();
    // The footer of every page, subcommands' included: "envelopectl 0.1.0".
    let source = format!(
        "{} {}",
        binary.name,
        command.get_version().unwrap_or_default()
    );
    let page = Page {
        binary,
        source: &source,
        see_also,
    };
    let mut written = Vec::new();
    write_tree(&page, &command, dir, &mut written)?;
    Ok(written)
}

/// What every page of one binary shares.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    pub binary: &'a Binary,
    /// The footer's source: binary name and version.
    pub source: &'a str,
    /// Every shipped binary, for SEE ALSO.
    pub see_also: &'a [&'a str],
}

fn write_tree(
    page_of: &Page<'_>,
    command: &clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let page = render(page_of, command)?;
    let name = command.get_display_name().unwrap_or(command.get_name());
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(page_of, sub, dir, written)?;
    }
    Ok(())
}

/// One page: clap_mangen's sections in its order, with ours before VERSION.
pub fn render(page: &Page<'_>, command: &clap::Command) -> Result<Vec<u8>> {
    let man = Man::new(command.clone()).source(page.source);
    let mut sections: Vec<Vec<u8>> = Vec::new();
    let mut section = |render: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| -> Result<()> {
        let mut text = Vec::new();
        render(&mut text)?;
        sections.push(text);
        Ok(())
    };
    section(&|w| man.render_title(w))?;
    section(&|w| man.render_name_section(w))?;
    section(&|w| man.render_synopsis_section(w))?;
    section(&|w| man.render_description_section(w))?;
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        section(&|w| man.render_options_section(w))?;
    }
    if command.get_subcommands().any(|s| !s.is_hide_set()) {
        section(&|w| man.render_subcommands_section(w))?;
    }
    if command.get_after_help().is_some() || command.get_after_long_help().is_some() {
        section(&|w| man.render_extra_section(w))?;
    }
    if page.binary.go_flags {
        section(&|w| go_flags_section(command).to_writer(w))?;
    }
    section(&|w| see_also_section(command, page.see_also).to_writer(w))?;
    if command
        .get_version()
        .or(command.get_long_version())
        .is_some()
    {
        section(&|w| man.render_version_section(w))?;
    }
    // Each rendered piece starts with roff's preamble (the `Aq` string
    // definition); the page needs it once, at the top.
    let preamble = Roff::default().render().into_bytes();
    let mut out = Vec::new();
    for (i, text) in sections.iter().enumerate() {
        let body = match text.strip_prefix(preamble.as_slice()) {
            Some(body) if i > 0 => body,
            _ => text.as_slice(),
        };
        out.write_all(body)?;
    }
    Ok(out)
}

/// The Go original's spellings: single-dash long flags, the hidden aliases, and
/// the hidden flags accepted only for compatibility (their names contain a dot).
fn go_flags_section(command: &clap::Command) -> Roff {
    let mut roff = Roff::default();
    roff.control("SH", ["GO-STYLE FLAGS"]);
    let mut intro = String::from(
        "As with the Go original's flag package, every long flag may also be written \
         with a single dash, with its value after = or as the next argument",
    );
    let example = command
        .get_arguments()
        .find(|a| !a.is_hide_set() && a.get_long().is_some() && a.get_action().takes_values());
    if let Some(arg) = example {
        let long = arg.get_long().unwrap_or_default();
        let value = arg
            .get_value_names()
            .and_then(|names| names.first().map(ToString::to_string))
            .unwrap_or_else(|| "VALUE".to_owned());
        intro.push_str(&format!(" (-{long}={value}, -{long} {value})"));
    }
    intro.push('.');
    roff.text([roman(intro)]);
    let mut aliases = Vec::new();
    let mut compat = Vec::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_hide_set() {
            if long.contains('.') {
                let also: Vec<&str> = arg.get_all_aliases().unwrap_or_default();
                compat.push((long, also, arg.get_help().map(ToString::to_string)));
            }
            continue;
        }
        let visible: Vec<&str> = arg.get_visible_aliases().unwrap_or_default();
        for alias in arg.get_all_aliases().unwrap_or_default() {
            if !visible.contains(&alias) {
                aliases.push((alias, long));
            }
        }
    }
    if !aliases.is_empty() {
        roff.text([roman("These Go spellings are accepted as aliases:")]);
        for (alias, long) in aliases {
            roff.control("TP", []);
            roff.text([bold(format!("-{alias}"))]);
            roff.text([roman("the same as "), bold(format!("--{long}"))]);
        }
    }
    if !compat.is_empty() {
        roff.control("PP", []);
        roff.text([roman("Accepted for compatibility with the Go original:")]);
        for (long, also, help) in compat {
            roff.control("TP", []);
            let mut names = vec![bold(format!("-{long}"))];
            for alias in also {
                names.push(roman(", "));
                names.push(bold(format!("-{alias}")));
            }
            roff.text(names);
            roff.text([roman(help.unwrap_or_default())]);
        }
    }
    roff
}

fn see_also_section(command: &clap::Command, see_also: &[&str]) -> Roff {
    let own = command.get_display_name().unwrap_or(command.get_name());
    let mut pages: Vec<String> = see_also
        .iter()
        .filter(|name| **name != own)
        .map(|name| format!("{name}(1)"))
        .collect();
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push(format!(
            "{}(1)",
            sub.get_display_name().unwrap_or(sub.get_name())
        ));
    }
    let mut roff = Roff::default();
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(pages.join(", "))]);
    roff
}
