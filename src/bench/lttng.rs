//! LTTng's anchor `churn.sh`, run in the same sitting for comparison.

use super::ours::OursRun;
use super::{ChurnArgs, ChurnMode};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One run of LTTng's `churn.sh`.
#[derive(Debug, PartialEq)]
pub(super) struct LttngRun {
    /// `wall_s=`.
    pub(super) wall_s: f64,
    /// `recorded:` (absent for `none`).
    pub(super) recorded: Option<u64>,
}

/// Reads `wall_s=` and `recorded:` from churn.sh's output.
fn parse_churn_sh(stdout: &str) -> Option<LttngRun> {
    let wall_s = stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("wall_s="))?
        .parse()
        .ok()?;
    let recorded = stdout
        .lines()
        .find_map(|l| l.strip_prefix("recorded:")?.trim().parse().ok());
    Some(LttngRun { wall_s, recorded })
}

/// The anchor directory: the option, else ../shared/anchors/lttng beside the repo.
pub(super) fn anchor_dir(args: &ChurnArgs) -> PathBuf {
    args.anchor_dir
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/anchors/lttng"))
}

/// Why LTTng cannot be compared here, if it cannot.
pub(super) fn lttng_missing(anchor: &Path) -> Option<String> {
    let installed = Command::new("lttng")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        Some("lttng is not installed".into())
    } else if !anchor.join("churn.sh").is_file() {
        Some(format!(
            "no churn.sh in {} (see --anchor-dir)",
            anchor.display()
        ))
    } else {
        None
    }
}

/// Runs `churn.sh apps par mode`.
pub(super) fn run_lttng(
    anchor: &Path,
    apps: u32,
    par: u32,
    mode: ChurnMode,
) -> Result<LttngRun, String> {
    let out = Command::new("bash")
        .arg(anchor.join("churn.sh"))
        .args([apps.to_string(), par.to_string(), mode.name().to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run churn.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "churn.sh {apps} {par} {} failed ({}): {}",
            mode.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_churn_sh(&stdout).ok_or_else(|| format!("no wall_s= in churn.sh's output: {stdout}"))
}

/// Runs churn.sh for the mode of `ours` and, given ours' traced/untraced `ratio`,
/// `none` too; prints both and the ratios.
pub(super) fn compare_lttng(
    anchor: &Path,
    ours: &OursRun,
    ratio: Option<f64>,
) -> Result<(), String> {
    let lttng = run_lttng(anchor, ours.apps, ours.par, ours.mode)?;
    let recorded = lttng
        .recorded
        .map_or(String::new(), |r| format!(", recorded {r}"));
    println!(
        "lttng {}: {} apps, par {}: wall {:.3} s, {:.1} apps/s{recorded}",
        ours.mode.name(),
        ours.apps,
        ours.par,
        lttng.wall_s,
        f64::from(ours.apps) / lttng.wall_s
    );
    println!(
        "ours/lttng wall: {:.3}",
        ours.wall.as_secs_f64() / lttng.wall_s
    );
    if let Some(ratio) = ratio {
        let untraced = run_lttng(anchor, ours.apps, ours.par, ChurnMode::None)?;
        println!(
            "lttng none: wall {:.3} s; traced/untraced wall: ours {ratio:.2}, lttng {:.2}",
            untraced.wall_s,
            lttng.wall_s / untraced.wall_s
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_sh_output_is_parsed() {
        let out = "mode=pid apps=200 par=4 wall_s=37.61 apps_per_s=5.317\nrecorded: 200\n";
        assert_eq!(
            parse_churn_sh(out),
            Some(LttngRun {
                wall_s: 37.61,
                recorded: Some(200)
            })
        );
        let none = "mode=none apps=10 par=4 wall_s=.0312 apps_per_s=320.5\n";
        assert_eq!(
            parse_churn_sh(none),
            Some(LttngRun {
                wall_s: 0.0312,
                recorded: None
            })
        );
        assert_eq!(parse_churn_sh("nothing"), None);
    }
}
