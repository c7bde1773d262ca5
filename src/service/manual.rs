//! Man pages and shell completions, generated from the clap definitions that parse
//! the command lines (and, for `ustraced.toml(5)`, from the shipped
//! `config/ustraced.toml`), so that they cannot drift from `--help` or from the
//! defaults. `ustrace man DIR` and `ustrace completions SHELL` call these; the
//! Debian package is built with them.

use crate::service::{DEFAULT_CONFIG_PATH, DaemonArgs};
use clap::CommandFactory;
use clap_complete::Shell;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The shipped config file, every key with its default and its comment.
const SHIPPED_CONFIG: &str = include_str!("../../config/ustraced.toml");

/// The command whose completions to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Program {
    /// The CLI.
    Ustrace,
    /// The daemon.
    Ustraced,
}

impl Program {
    /// Its clap definition, named as installed.
    fn command(self) -> clap::Command {
        match self {
            Program::Ustrace => crate::cli::Cli::command(),
            Program::Ustraced => DaemonArgs::command(),
        }
    }
}

/// Writes `shell`'s completion script for `program` to `out`.
pub fn completions(shell: Shell, program: Program, out: &mut dyn Write) {
    let mut cmd = program.command();
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// Writes `ustrace.1` (and `ustrace-<subcommand>.1` for each subcommand),
/// `ustraced.8` and `ustraced.toml.5` into `dir`, which must exist; returns the
/// files written.
pub fn write_man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    clap_mangen::generate_to(crate::cli::Cli::command(), dir)?;
    let mut written: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ustrace") && n.ends_with(".1"))
        })
        .collect();
    written.sort();
    let daemon = clap_mangen::Man::new(DaemonArgs::command()).section("8");
    written.push(daemon.generate_to(dir)?);
    let config = dir.join("ustraced.toml.5");
    fs::write(&config, config_man_page(SHIPPED_CONFIG))?;
    written.push(config);
    Ok(written)
}

/// Escapes `text` for a roff text line: backslashes, and a leading `.` or `'`
/// that roff would take for a request.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// `ustraced.toml(5)` from the shipped config: its opening comment is the
/// description, each `[section]` a subsection, each key a tagged paragraph
/// (`key = default`) with the comment above it, and the closing comment (the
/// `[[session]]` example) kept as written.
pub fn config_man_page(shipped: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        ".TH USTRACED.TOML 5 \"\" \"ustrace {}\" \"File formats\"\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str(".SH NAME\nustraced.toml \\- configuration file of the ustrace session daemon\n");
    out.push_str(&format!(
        ".SH SYNOPSIS\n{}\n.SH DESCRIPTION\n",
        roff_text(DEFAULT_CONFIG_PATH)
    ));
    let mut comment: Vec<&str> = Vec::new();
    let mut in_section = false;
    let flush_paragraph = |out: &mut String, comment: &mut Vec<&str>| {
        for line in comment.drain(..) {
            out.push_str(&roff_text(line));
            out.push('\n');
        }
    };
    for line in shipped.lines() {
        let trimmed = line.trim();
        if let Some(text) = trimmed.strip_prefix('#') {
            let text = text.strip_prefix(' ').unwrap_or(text);
            if !text.is_empty() {
                comment.push(text);
            }
        } else if trimmed.starts_with('[') {
            if !in_section {
                flush_paragraph(&mut out, &mut comment);
                out.push_str(".SH KEYS\n");
                in_section = true;
            }
            out.push_str(&format!(".SS {}\n", roff_text(trimmed)));
            flush_paragraph(&mut out, &mut comment);
        } else if !trimmed.is_empty() {
            out.push_str(&format!(".TP\n\\fB{}\\fR\n", roff_text(trimmed)));
            flush_paragraph(&mut out, &mut comment);
        } else if !in_section {
            flush_paragraph(&mut out, &mut comment);
            out.push_str(".PP\n");
        }
    }
    if !comment.is_empty() {
        out.push_str(".SH SESSIONS\n.nf\n");
        flush_paragraph(&mut out, &mut comment);
        out.push_str(".fi\n");
    }
    out.push_str(&format!(
        ".SH FILES\n.TP\n.B {}\nread when neither \\fB\\-\\-config\\fR nor \\fB$USTRACE_CONFIG\\fR names a file; if it does not exist, every key takes its default.\n",
        roff_text(DEFAULT_CONFIG_PATH)
    ));
    out.push_str(
        ".SH SIGNALS\nSIGHUP makes \\fBustraced\\fR read the file again: the \\fB[supervision]\\fR limits and sessions newly declared in \\fB[[session]]\\fR take effect at once; the daemon logs every other change as needing a restart.\n",
    );
    out.push_str(".SH SEE ALSO\n\\fBustraced\\fR(8), \\fBustrace\\fR(1)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_the_shipped_config_is_a_tagged_paragraph() {
        let page = config_man_page(SHIPPED_CONFIG);
        for line in SHIPPED_CONFIG.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let shown = roff_text(line);
            assert!(
                page.contains(&shown),
                "{line} missing from ustraced.toml(5)"
            );
        }
        assert!(page.contains(".SH SESSIONS"));
        assert!(
            !page.lines().any(|l| l.starts_with(".[")),
            "unescaped request"
        );
    }
}
