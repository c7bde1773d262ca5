//! What the CLI prints for a daemon's answer: words for people, or with `--json`
//! one JSON object of the shape docs/cli.md lists, and nothing at all (status 0)
//! once the reader closed the pipe (`ustrace status | head -1`).

use crate::protocol::messages::{AppInfo, Buffering, ControlOk, SessionInfo, StatusReport};
use crate::shm::Mode;
use serde_json::{Value as Json, json};
use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

/// `per-UID` or `per-PID`, as LTTng says it.
pub fn buffering_word(buffers: Buffering) -> &'static str {
    match buffers {
        Buffering::PerUid => "per-UID",
        Buffering::PerPid => "per-PID",
    }
}

/// `discard` or `overwrite`.
pub fn mode_word(mode: Mode) -> &'static str {
    match mode {
        Mode::Discard => "discard",
        Mode::Overwrite => "overwrite",
    }
}

/// Whether a write failed because the reader is gone: the CLI then ends quietly.
pub fn closed_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// Writes `text` to standard output; a closed pipe is no error.
pub fn emit(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: writing the output: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the answer to `command` and gives the exit status: failure for a refusal.
/// With `json` a refusal is a JSON object on standard output too.
pub fn answer(command: &str, answer: &Result<ControlOk, String>, json: bool) -> ExitCode {
    match (answer, json) {
        (Ok(ok), true) => emit(&format!("{}\n", json_answer(command, ok))),
        (Ok(ok), false) => emit(&human(ok)),
        (Err(message), json) => refusal(command, message, json),
    }
}

/// Prints why `command` failed and gives the failure status.
pub fn refusal(command: &str, message: &str, json: bool) -> ExitCode {
    if json {
        let line = json!({"command": command, "ok": false, "error": message});
        emit(&format!("{line}\n"));
    } else {
        eprintln!("Error: {message}");
    }
    ExitCode::FAILURE
}

/// `{"command", "ok": true, ...}` with the answer's own keys.
pub fn json_answer(command: &str, ok: &ControlOk) -> Json {
    let mut object = json!({"command": command, "ok": true});
    match ok {
        ControlOk::Done(message) => object["message"] = json!(message),
        ControlOk::Sessions(sessions) => {
            object["sessions"] = sessions.iter().map(json_session).collect()
        }
        ControlOk::Status(status) => object["status"] = json_status(status),
        ControlOk::Apps(apps) => object["apps"] = json!(apps),
    }
    object
}

/// One session of `list --json`.
fn json_session(s: &SessionInfo) -> Json {
    let channels: Vec<Json> = s
        .channels
        .iter()
        .map(|(c, events)| {
            json!({
                "name": c.name,
                "enabled": !s.disabled_channels.contains(&c.name),
                "buffers": c.buffers,
                "subbuf_size": c.subbuf_size,
                "num_subbuf": c.num_subbuf,
                "mode": c.mode,
                "writer": c.writer,
                "contexts": c.contexts(),
                "events": events,
            })
        })
        .collect();
    json!({
        "name": s.name,
        "output": s.output,
        "active": s.started,
        "snapshot": s.snapshot,
        "rotation": {"timer_us": s.rotation.timer_us, "size": s.rotation.size},
        "channels": channels,
    })
}

/// `status --json`: the counters under the names `status` prints them by.
fn json_status(s: &StatusReport) -> Json {
    let per_uid: Vec<Json> = s
        .per_uid
        .iter()
        .map(|u| {
            json!({
                "uid": u.uid,
                "events_discarded": u.events_discarded,
                "packets_overwritten": u.packets_overwritten,
                "events_lost_dead_producer": u.events_lost_dead_producer,
                "corrupt_rings": u.corrupt_rings,
                "packets_lost_corrupt_ring": u.packets_lost_corrupt_ring,
            })
        })
        .collect();
    let failed: Vec<Json> = s
        .failed_writers
        .iter()
        .map(|f| json!({"stream": f.stream, "error": f.error, "packets_lost": f.packets_lost}))
        .collect();
    let refusals: Vec<Json> = s
        .refusals
        .iter()
        .map(|(cause, count)| json!({"cause": cause, "count": count}))
        .collect();
    json!({
        "apps": s.apps,
        "apps_total": s.apps_total,
        "clock": s.clock,
        "clock_tsc_hz": s.clock_tsc_hz,
        "buffer_sets": s.buffer_sets,
        "writers": s.writers,
        "pid_sets_ready": s.pid_sets_ready,
        "pid_sets_wanted": s.pid_sets_wanted,
        "writer_restarts": s.writer_restarts,
        "events_discarded": s.events_discarded,
        "packets_overwritten": s.packets_overwritten,
        "events_lost_dead_producer": s.events_lost_dead_producer,
        "unrecorded_reservations": s.unrecorded_reservations,
        "packets_lost_writer": s.packets_lost_writer,
        "corrupt_rings": s.corrupt_rings,
        "packets_lost_corrupt_ring": s.packets_lost_corrupt_ring,
        "per_uid": per_uid,
        "failed_writers": failed,
        "registration_service_us": s.registration_service_us,
        "refusals": refusals,
        "rotations": s.rotations.iter().map(|r| json!({
            "session": r.session,
            "timer_us": r.schedule.timer_us,
            "size": r.schedule.size,
            "chunks_closed": r.info.archives,
            "last_archive": r.info.last_archive,
        })).collect::<Vec<Json>>(),
    })
}

/// The answer as `lttng` would word it.
fn human(ok: &ControlOk) -> String {
    let mut text = String::new();
    match ok {
        ControlOk::Done(message) => text = format!("{message}\n"),
        ControlOk::Sessions(sessions) if sessions.is_empty() => text.push_str("no session\n"),
        ControlOk::Sessions(sessions) => sessions.iter().for_each(|s| session(&mut text, s)),
        ControlOk::Status(s) => status(&mut text, s),
        ControlOk::Apps(apps) if apps.is_empty() => text.push_str("no app connected\n"),
        ControlOk::Apps(apps) => apps.iter().for_each(|a| app(&mut text, a)),
    }
    text
}

fn app(text: &mut String, app: &AppInfo) {
    let registered =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(app.registered_unix_ms);
    let _ = writeln!(
        text,
        "pid {} uid {} {} registered {}",
        app.pid,
        app.uid,
        app.procname,
        crate::trace::layout::iso8601_basic(registered)
    );
    for c in &app.channels {
        let _ = writeln!(
            text,
            "  {}/{} ({} buffers): {}",
            c.session,
            c.channel,
            buffering_word(c.buffers),
            c.enabled.join(", ")
        );
    }
    let _ = writeln!(text, "  events: {}", app.events.join(", "));
}

fn session(text: &mut String, s: &SessionInfo) {
    let state = if s.started { "active" } else { "inactive" };
    let mode = if s.snapshot { ", snapshot mode" } else { "" };
    let _ = writeln!(text, "{} [{state}{mode}] -> {}", s.name, s.output);
    for (channel, patterns) in &s.channels {
        let disabled = if s.disabled_channels.contains(&channel.name) {
            " [disabled]"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "  channel {}{disabled}: {} buffers, {} x {} bytes, {}, writer {}",
            channel.name,
            buffering_word(channel.buffers),
            channel.num_subbuf,
            channel.subbuf_size,
            mode_word(channel.mode),
            channel.writer
        );
        for p in patterns {
            let _ = writeln!(text, "    event {p}");
        }
    }
}

fn status(text: &mut String, s: &StatusReport) {
    let mut line = |label: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(text, "{label:<27}{value}");
    };
    line("apps connected:", &s.apps);
    line("apps registered in total:", &s.apps_total);
    if s.clock_tsc_hz > 0 {
        let mhz = s.clock_tsc_hz as f64 / 1e6;
        line(
            "trace clock:",
            &format!(
                "{} ({mhz:.3} MHz, calibrated against CLOCK_MONOTONIC)",
                s.clock
            ),
        );
    } else {
        line("trace clock:", &s.clock);
    }
    line("buffer sets:", &s.buffer_sets);
    line("writers:", &s.writers);
    line(
        "per-PID ring sets ready:",
        &format!("{} of {}", s.pid_sets_ready, s.pid_sets_wanted),
    );
    line("writer restarts:", &s.writer_restarts);
    line("events discarded:", &s.events_discarded);
    line("packets overwritten:", &s.packets_overwritten);
    line("events lost (dead app):", &s.events_lost_dead_producer);
    line("unrecorded reservations:", &s.unrecorded_reservations);
    line("packets lost (writer):", &s.packets_lost_writer);
    if s.relayd_connects > 0 || s.relayd_send_failures > 0 {
        line("relayd connections:", &s.relayd_connects);
        line("relayd send failures:", &s.relayd_send_failures);
    }
    line("rings found corrupt:", &s.corrupt_rings);
    line(
        "packets lost (corrupt ring): ",
        &s.packets_lost_corrupt_ring,
    );
    for u in &s.per_uid {
        let _ = writeln!(
            text,
            "  uid {}: {} discarded, {} overwritten, {} lost (dead app), {} corrupt rings, {} packets lost (corrupt ring)",
            u.uid,
            u.events_discarded,
            u.packets_overwritten,
            u.events_lost_dead_producer,
            u.corrupt_rings,
            u.packets_lost_corrupt_ring
        );
    }
    let none = vec![0; s.registration_service_us.len()];
    let service = |p| StatusReport::service_percentile(&s.registration_service_us, &none, p);
    if let (Some(p50), Some(p99)) = (service(0.5), service(0.99)) {
        let _ = writeln!(
            text,
            "registration service time: p50 < {p50} us, p99 < {p99} us"
        );
    }
    for (cause, count) in &s.refusals {
        let _ = writeln!(text, "apps refused ({cause}): {count}");
    }
    for r in &s.rotations {
        let mut schedule = Vec::new();
        if let Some(us) = r.schedule.timer_us {
            schedule.push(format!("every {}", crate::config::TimeSpan(us)));
        }
        if let Some(size) = r.schedule.size {
            schedule.push(format!("every {size} bytes"));
        }
        let schedule = match schedule.is_empty() {
            true => "on request".to_string(),
            false => schedule.join(" or "),
        };
        let _ = writeln!(
            text,
            "session {} rotates {schedule}: {} chunks closed, last archive {}",
            r.session,
            r.info.archives,
            r.info.last_archive.as_deref().unwrap_or("none")
        );
    }
    for f in &s.failed_writers {
        let _ = writeln!(
            text,
            "FAILED writer {}: {} ({} packets lost)",
            f.stream, f.error, f.packets_lost
        );
    }
}
