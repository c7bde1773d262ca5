//! `ustrace bench churn` for real: a private daemon, real short-lived apps, the trace
//! read back. Small runs (20 apps) so that the file stays quick in debug builds.

mod common;

use common::churn_events as events;
use std::process::Command;

/// Runs `ustrace bench churn` with `args` and returns its stdout; fails on a non-zero exit.
fn churn(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ustrace"))
        .args(["bench", "churn"])
        .args(args)
        .output()
        .expect("run ustrace bench churn");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ustrace bench churn {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The app count of the registration latency line.
fn registered(stdout: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.contains("registration latency"))
        .unwrap_or_else(|| panic!("no latency line in {stdout}"));
    let (_, rest) = line.split_once("RegistrationDone, ").expect("app count");
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn every_event_of_per_pid_churn_is_recorded() {
    let out = churn(&[
        "--apps", "20", "--par", "4", "--mode", "pid", "--events", "3",
    ]);
    assert_eq!(events(&out), (60, 60), "{out}");
    assert_eq!(registered(&out), 20, "{out}");
}

#[test]
fn every_event_of_per_uid_churn_is_recorded() {
    let out = churn(&[
        "--apps", "20", "--par", "4", "--mode", "uid", "--events", "3",
    ]);
    assert_eq!(events(&out), (60, 60), "{out}");
    assert_eq!(registered(&out), 20, "{out}");
}

#[test]
fn untraced_churn_registers_every_app_and_records_nothing() {
    let out = churn(&["--apps", "20", "--par", "4", "--mode", "none"]);
    assert_eq!(registered(&out), 20, "{out}");
    assert!(!out.contains("events:"), "{out}");
}

#[test]
fn killed_apps_lose_no_committed_event_and_babeltrace2_agrees() {
    let out = churn(&[
        "--apps",
        "20",
        "--par",
        "4",
        "--mode",
        "pid",
        "--events",
        "5",
        "--kill-fraction",
        "0.5",
    ]);
    assert_eq!(events(&out), (100, 100), "{out}");
    assert!(out.contains("babeltrace2 reads 100"), "{out}");
    assert!(out.contains("apps SIGKILLed after emitting"), "{out}");
}

#[test]
fn the_daemon_config_reaches_the_benchmarks_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let no_pool = dir.path().join("no-pool.toml");
    std::fs::write(&no_pool, "[daemon]\nwarm_pid_buffer_sets = 0\n").unwrap();
    let out = churn(&[
        "--apps",
        "10",
        "--mode",
        "pid",
        "--daemon-config",
        no_pool.to_str().unwrap(),
    ]);
    assert_eq!(events(&out), (10, 10), "{out}");

    // A config the daemon refuses, and one that would move its sockets, are
    // reported before any app runs, by `churn` and `drain` alike.
    let refused = [
        (
            "[daemon]\nwarm_pid_buffer_sets = 1000\n",
            "daemon.warm_pid_buffer_sets",
        ),
        (
            "[daemon]\nruntime_dir = \"/tmp/elsewhere\"\n",
            "runtime_dir must be empty",
        ),
    ];
    for bench in ["churn", "drain"] {
        for (text, expected) in refused {
            let path = dir.path().join("bad.toml");
            std::fs::write(&path, text).unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_ustrace"))
                .args(["bench", bench, "--daemon-config"])
                .arg(&path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success());
            assert!(stderr.contains(expected), "{stderr}");
        }
    }
}

#[test]
fn repeated_pairs_print_each_ratio_and_their_median() {
    let out = churn(&[
        "--apps",
        "10",
        "--par",
        "2",
        "--mode",
        "uid",
        "--baseline",
        "--repeat",
        "3",
    ]);
    let ratios: Vec<f64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("ours traced/untraced wall: "))
        .map(|r| r.parse().unwrap())
        .collect();
    assert_eq!(ratios.len(), 3, "{out}");
    let summary = out
        .lines()
        .find_map(|l| l.strip_prefix("ours traced/untraced wall, median of 3 alternating pairs: "))
        .unwrap_or_else(|| panic!("no median line in {out}"));
    let median: f64 = summary.split(' ').next().unwrap().parse().unwrap();
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(format!("{median:.2}"), format!("{:.2}", sorted[1]), "{out}");
    assert_eq!(
        out.matches("events: expected 10, recorded 10").count(),
        3,
        "{out}"
    );
}
