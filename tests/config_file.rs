//! The configuration file: the shipped file is the default, every bad key or value
//! is reported with file, position and dotted key, and resolved settings apply the
//! defaults.

#![cfg(feature = "daemon")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ustrace::config::{ByteSize, Config, ConfigError};
use ustrace::ctf::context::ContextType;
use ustrace::protocol::messages::{Buffering, ChannelSpec, TracefileLimits};
use ustrace::rule::EventPattern;
use ustrace::shm::Mode;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ustraced.toml");

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/ustrace/test.toml"))
}

/// Parses `text`, expects an `Invalid` error, checks it names `key` and the file,
/// and returns (line, column, message).
fn invalid(text: &str, key: &str) -> (Option<(usize, usize)>, String) {
    let err = parse(text).expect_err("configuration must be refused");
    let rendered = err.to_string();
    match err {
        ConfigError::Invalid {
            location,
            key: got,
            message,
        } => {
            assert_eq!(got, key, "wrong key in: {rendered}");
            assert_eq!(location.file, PathBuf::from("/etc/ustrace/test.toml"));
            assert!(rendered.starts_with("/etc/ustrace/test.toml"), "{rendered}");
            assert!(rendered.contains(key), "{rendered}");
            (location.line_col, message)
        }
        other => panic!("expected an invalid key error, got {other:?}"),
    }
}

#[test]
fn shipped_file_parses_to_exactly_the_defaults() {
    assert_eq!(Config::load(Path::new(SHIPPED)).unwrap(), Config::default());
}

#[test]
fn shipped_example_session_parses_when_uncommented() {
    let text = std::fs::read_to_string(SHIPPED).unwrap();
    let example: String = text
        .lines()
        .skip_while(|line| !line.starts_with("# [[session]]"))
        .map(|line| format!("{}\n", line.trim_start_matches('#')))
        .collect();
    let config = parse(&example).unwrap();
    assert_eq!(config.sessions.len(), 1);
    let session = &config.sessions[0];
    assert_eq!(
        (
            session.name.as_str(),
            session.output.as_ref(),
            session.autostart
        ),
        ("example", None, true)
    );
    assert_eq!(session.channels[0].name, "chan0");
    assert_eq!(session.channels[0].events[0].0.pattern.as_str(), "demo:*");
    let rule = &session.channels[0].events[1].0;
    assert_eq!(
        rule.to_string(),
        "net:* exclude net:poll* loglevel <= WARNING"
    );
    assert!(session.channels[0].enabled);
}

#[test]
fn empty_file_is_the_default() {
    assert_eq!(parse("").unwrap(), Config::default());
}

#[test]
fn defaults_are_the_documented_values() {
    let config = Config::default();
    assert_eq!(
        config.daemon.registration_timeout(),
        Duration::from_millis(3000)
    );
    assert_eq!(config.daemon.flush_interval(), Duration::from_millis(200));
    assert_eq!(config.daemon.max_frame(), 1 << 20);
    assert_eq!(config.channel_defaults.subbuf_size, ByteSize(128 * 1024));
    assert_eq!(config.channel_defaults.num_subbuf, 4);
    assert_eq!(config.channel_defaults.mode, Mode::Discard);
    assert_eq!(config.channel_defaults.buffers, Buffering::PerUid);
    assert_eq!(config.channel_defaults.writer, "ctf");
    assert_eq!(config.channel_defaults.tracefile_size, ByteSize(0));
    assert_eq!(config.channel_defaults.tracefile_count, 0);
    assert_eq!(config.supervision.max_restarts, 3);
    assert_eq!(config.supervision.within(), Duration::from_secs(10));
    assert_eq!(config.supervision.backoff(), Duration::from_millis(100));
    assert_eq!(config.limits.max_apps, 4096);
    assert_eq!(config.limits.max_pid_buffer_bytes, ByteSize(1 << 30));
    assert_eq!(config.limits.max_events_per_app, 8192);
    assert_eq!(config.limits.max_fields_per_event, 128);
    assert_eq!(config.limits.max_events_per_trace, 65536);
    assert_eq!(config.limits.max_metadata_bytes, ByteSize(32 << 20));
    assert_eq!(config.limits.max_writer_backlog_bytes, ByteSize(2 << 20));
    assert!(config.sessions.is_empty());
}

#[test]
fn sessions_and_channels_parse_with_overrides() {
    let config = parse(
        r#"
[channel_defaults]
subbuf_size = 8192

[[session]]
name = "web"
output = "/var/trace/web"
autostart = false
  [[session.channel]]
  name = "requests"
  buffers = "pid"
  subbuf_size = "64K"
  num_subbuf = 8
  mode = "overwrite"
  writer = "ctf"
  contexts = ["procname", "vpid"]
  events = ["http:*", "db:query"]
  [[session.channel]]
  name = "misc"

[[session]]
name = "batch.2"
"#,
    )
    .unwrap();
    assert_eq!(config.sessions.len(), 2);
    let web = &config.sessions[0];
    assert_eq!(web.output.as_deref(), Some(Path::new("/var/trace/web")));
    assert!(!web.autostart);
    assert_eq!(
        config.channel_spec(&web.channels[0]),
        ChannelSpec {
            name: "requests".into(),
            buffers: Buffering::PerPid,
            subbuf_size: 64 * 1024,
            num_subbuf: 8,
            mode: Mode::Overwrite,
            writer: "ctf".into(),
            contexts: Some(vec![ContextType::Procname, ContextType::Vpid]),
            tracefile: Default::default(),
        }
    );
    assert_eq!(
        config.channel_spec(&web.channels[0]).contexts(),
        [ContextType::Vpid, ContextType::Procname],
        "recorded in encoding order"
    );
    assert_eq!(
        config.channel_spec(&web.channels[1]),
        ChannelSpec {
            name: "misc".into(),
            buffers: Buffering::PerUid,
            subbuf_size: 8192,
            num_subbuf: 4,
            mode: Mode::Discard,
            writer: "ctf".into(),
            contexts: None,
            tracefile: Default::default(),
        }
    );
    assert_eq!(
        config.channel_spec(&web.channels[1]).contexts(),
        [ContextType::Vpid, ContextType::Vtid],
        "a per-UID channel records vpid and vtid unless told otherwise"
    );
    assert!(config.sessions[1].autostart);
    assert!(config.sessions[1].channels.is_empty());
}

#[test]
fn channel_defaults_contexts_apply_to_channels_that_name_none() {
    let config = parse(
        "[channel_defaults]\ncontexts = [\"cpu_id\", \"pthread_id\", \"ip\"]\n\
         [[session]]\nname = \"s\"\n  [[session.channel]]\n  name = \"a\"\n  buffers = \"pid\"\n\
         [[session.channel]]\n  name = \"b\"\n  contexts = []\n",
    )
    .unwrap();
    let s = &config.sessions[0];
    assert_eq!(
        config.channel_spec(&s.channels[0]).contexts(),
        [ContextType::PthreadId, ContextType::CpuId, ContextType::Ip]
    );
    assert!(config.channel_spec(&s.channels[1]).contexts().is_empty());
    let err = parse("[channel_defaults]\ncontexts = [\"vtd\"]\n").unwrap_err();
    assert!(err.to_string().contains("vtd"), "{err}");
}

#[test]
fn sizes_accept_integers_and_binary_suffixes() {
    for (text, bytes) in [
        ("4096", 4096),
        ("\"4096\"", 4096),
        ("\"4K\"", 4096),
        ("\"4k\"", 4096),
        ("\"2M\"", 2 << 20),
        ("\"1G\"", 1 << 30),
    ] {
        let config = parse(&format!("[channel_defaults]\nsubbuf_size = {text}\n")).unwrap();
        assert_eq!(
            config.channel_defaults.subbuf_size,
            ByteSize(bytes),
            "{text}"
        );
    }
}

#[test]
fn malformed_sizes_are_refused_naming_the_key() {
    for text in [
        "\"12X\"",
        "\"K\"",
        "\"1.5M\"",
        "\"\"",
        "-4096",
        "\" 4K\"",
        "\"99999999999999999999G\"",
        "1.0",
    ] {
        let (position, message) = invalid(
            &format!("[channel_defaults]\nsubbuf_size = {text}\n"),
            "channel_defaults.subbuf_size",
        );
        assert_eq!(position, Some((2, 15)), "{text}: {message}");
    }
}

#[test]
fn unknown_top_level_section_is_refused() {
    let (position, message) = invalid("[deamon]\nflush_interval_ms = 5\n", "deamon");
    assert_eq!(position, Some((1, 2)));
    assert!(message.contains("deamon"), "{message}");
}

#[test]
fn unknown_key_is_refused_naming_its_path() {
    let (position, message) = invalid(
        "[daemon]\nflush_intervall_ms = 5\n",
        "daemon.flush_intervall_ms",
    );
    assert_eq!(position, Some((2, 1)));
    assert!(message.contains("flush_intervall_ms"), "{message}");
}

#[test]
fn unknown_key_deep_in_a_session_names_the_indices() {
    let text = r#"
[[session]]
name = "a"
  [[session.channel]]
  name = "c0"
  [[session.channel]]
  name = "c1"
  event = ["demo:*"]
"#;
    let (position, _) = invalid(text, "session[0].channel[1].event");
    assert_eq!(position, Some((8, 3)));
}

#[test]
fn wrong_type_is_refused_naming_the_key() {
    let (position, message) = invalid(
        "[daemon]\nregistration_timeout_ms = \"soon\"\n",
        "daemon.registration_timeout_ms",
    );
    assert_eq!(position, Some((2, 27)));
    assert!(!message.is_empty());
}

#[test]
fn unknown_mode_and_buffers_are_refused() {
    let (_, message) = invalid(
        "[channel_defaults]\nmode = \"ring\"\n",
        "channel_defaults.mode",
    );
    assert!(
        message.contains("discard") && message.contains("overwrite"),
        "{message}"
    );
    invalid(
        "[channel_defaults]\nbuffers = \"global\"\n",
        "channel_defaults.buffers",
    );
}

#[test]
fn sub_buffer_size_must_be_a_power_of_two_of_at_least_4k() {
    for bad in ["\"2K\"", "12288", "\"3M\"", "0"] {
        let (position, message) = invalid(
            &format!("[channel_defaults]\nsubbuf_size = {bad}\n"),
            "channel_defaults.subbuf_size",
        );
        assert_eq!(position, Some((2, 15)), "{bad}");
        assert!(message.contains("power of two"), "{message}");
    }
}

#[test]
fn sub_buffer_count_must_be_a_power_of_two_of_at_least_2() {
    for bad in [0, 1, 3, 6] {
        invalid(
            &format!("[channel_defaults]\nnum_subbuf = {bad}\n"),
            "channel_defaults.num_subbuf",
        );
    }
}

#[test]
fn geometry_past_the_ring_layout_s_limits_is_refused_at_its_line_and_column() {
    let (position, message) = invalid(
        "[channel_defaults]\nsubbuf_size = \"2G\"\n",
        "channel_defaults.subbuf_size",
    );
    assert_eq!(position, Some((2, 15)));
    assert!(message.contains("1 GiB"), "{message}");
    let text =
        "[[session]]\nname = \"s\"\n  [[session.channel]]\n  name = \"c\"\n  num_subbuf = 131072\n";
    let (position, message) = invalid(text, "session[0].channel[0].num_subbuf");
    assert_eq!(position, Some((5, 16)));
    assert!(message.contains("65536"), "{message}");
    // The largest values the rule allows load.
    parse("[channel_defaults]\nsubbuf_size = \"1G\"\nnum_subbuf = 65536\n")
        .expect("1G x 65536 is within the limits");
}

#[test]
fn channel_overrides_are_checked_at_their_own_path() {
    let text = r#"
[[session]]
name = "s"
  [[session.channel]]
  name = "ok"
  [[session.channel]]
  name = "bad"
  subbuf_size = "100K"
"#;
    let (position, _) = invalid(text, "session[0].channel[1].subbuf_size");
    assert_eq!(position, Some((8, 17)));
    let text = text.replace("subbuf_size = \"100K\"", "num_subbuf = 3");
    invalid(&text, "session[0].channel[1].num_subbuf");
}

#[test]
fn timers_and_limits_must_be_positive() {
    for (section, key) in [
        ("daemon", "registration_timeout_ms"),
        ("daemon", "flush_interval_ms"),
        ("supervision", "within_secs"),
        ("limits", "max_apps"),
        ("limits", "max_pid_buffer_bytes"),
        ("limits", "max_events_per_app"),
        ("limits", "max_fields_per_event"),
        ("limits", "max_events_per_trace"),
        ("limits", "max_apps_per_uid"),
        ("limits", "max_pid_buffer_bytes_per_uid"),
        ("limits", "max_writer_backlog_bytes"),
    ] {
        let (position, message) = invalid(
            &format!("[{section}]\n{key} = 0\n"),
            &format!("{section}.{key}"),
        );
        assert_eq!(position.map(|p| p.0), Some(2));
        assert!(message.contains("greater than 0"), "{message}");
    }
}

#[test]
fn max_metadata_bytes_must_hold_a_trace_s_fixed_declarations() {
    let (position, message) = invalid(
        "[limits]\nmax_metadata_bytes = \"4K\"\n",
        "limits.max_metadata_bytes",
    );
    assert_eq!(position.map(|p| p.0), Some(2));
    assert!(message.contains("at least 16384"), "{message}");
    let limits = parse("[limits]\nmax_metadata_bytes = \"16K\"\nmax_events_per_app = 7\n")
        .unwrap()
        .limits
        .events();
    assert_eq!(limits.max_metadata_bytes, 16 * 1024);
    assert_eq!(limits.max_events_per_app, 7);
}

#[test]
fn per_uid_limits_default_to_a_quarter_of_the_global_ones_and_never_exceed_them() {
    let config = Config::default();
    assert_eq!(config.limits.apps_per_uid(), 1024);
    assert_eq!(config.limits.pid_buffer_bytes_per_uid(), 256 << 20);
    let small = parse("[limits]\nmax_apps = 2\nmax_pid_buffer_bytes = 3\n").unwrap();
    assert_eq!(small.limits.apps_per_uid(), 1);
    assert_eq!(small.limits.pid_buffer_bytes_per_uid(), 1);
    let set =
        parse("[limits]\nmax_apps_per_uid = 10\nmax_pid_buffer_bytes_per_uid = \"1M\"\n").unwrap();
    assert_eq!(set.limits.apps_per_uid(), 10);
    assert_eq!(set.limits.pid_buffer_bytes_per_uid(), 1 << 20);
    let (_, message) = invalid(
        "[limits]\nmax_apps = 8\nmax_apps_per_uid = 9\n",
        "limits.max_apps_per_uid",
    );
    assert!(message.contains("at most limits.max_apps (8)"), "{message}");
    let (_, message) = invalid(
        "[limits]\nmax_pid_buffer_bytes_per_uid = \"2G\"\n",
        "limits.max_pid_buffer_bytes_per_uid",
    );
    assert!(
        message.contains("at most limits.max_pid_buffer_bytes (1073741824)"),
        "{message}"
    );
}

#[test]
fn max_frame_must_fit_a_u32_and_hold_a_page() {
    invalid(
        "[daemon]\nmax_frame_bytes = 100\n",
        "daemon.max_frame_bytes",
    );
    invalid(
        "[daemon]\nmax_frame_bytes = \"8G\"\n",
        "daemon.max_frame_bytes",
    );
    assert_eq!(
        parse("[daemon]\nmax_frame_bytes = \"4M\"\n")
            .unwrap()
            .daemon
            .max_frame(),
        4 << 20
    );
}

#[test]
fn session_names_must_be_unique_file_names() {
    let (position, message) = invalid(
        "[[session]]\nname = \"a\"\n[[session]]\nname = \"a\"\n",
        "session[1].name",
    );
    assert_eq!(position, Some((4, 8)));
    assert!(message.contains("twice"), "{message}");
    for bad in ["", "../etc", "a/b", ".hidden", "-x", "with space"] {
        invalid(&format!("[[session]]\nname = {bad:?}\n"), "session[0].name");
    }
    let (_, message) = invalid("[[session]]\nautostart = true\n", "session[0]");
    assert!(message.contains("name"), "{message}");
}

#[test]
fn channel_names_must_be_unique_in_their_session() {
    let text = "[[session]]\nname = \"s\"\n[[session.channel]]\nname = \"c\"\n[[session.channel]]\nname = \"c\"\n";
    invalid(text, "session[0].channel[1].name");
    // The same channel name in two sessions is fine.
    parse("[[session]]\nname = \"s\"\n[[session.channel]]\nname = \"c\"\n[[session]]\nname = \"t\"\n[[session.channel]]\nname = \"c\"\n").unwrap();
}

#[test]
fn writer_names_are_checked() {
    invalid(
        "[channel_defaults]\nwriter = \"\"\n",
        "channel_defaults.writer",
    );
    invalid(
        "[[session]]\nname = \"s\"\n[[session.channel]]\nname = \"c\"\nwriter = \"a/b\"\n",
        "session[0].channel[0].writer",
    );
}

#[test]
fn event_patterns_are_checked_where_they_are_written() {
    for bad in ["demo:ev-1", "", "de mo", "demo\\", "demo\\x"] {
        let text = format!(
            "[[session]]\nname = \"s\"\n[[session.channel]]\nname = \"c\"\nevents = [\"demo:ok\", {bad:?}]\n"
        );
        let (position, message) = invalid(&text, "session[0].channel[0].events[1]");
        assert_eq!(position, Some((5, 22)), "{bad}: {message}");
        assert!(
            message.contains(&format!("invalid event pattern {bad:?}")),
            "{message}"
        );
    }
}

#[test]
fn event_patterns_match_by_exact_name_or_prefix() {
    let pattern = |p: &str| EventPattern::parse(p).unwrap();
    assert!(pattern("demo:ev").matches("demo", "ev"));
    assert!(!pattern("demo:ev").matches("demo", "ev2"));
    assert!(pattern("demo:ev*").matches("demo", "ev2"));
    assert!(pattern("demo:*").matches("demo", "anything"));
    assert!(!pattern("demo:*").matches("demo2", "anything"));
    assert!(pattern("dem*").matches("demo2", "x"));
    assert!(pattern("*").matches("any", "thing"));
}

#[test]
fn lttng_patterns_that_match_nothing_yet_are_accepted() {
    for text in [
        "demo", "demo:", ":ev", "de*mo:ev", "a:b:c", "*ev", "demo\\*",
    ] {
        assert!(EventPattern::parse(text).is_ok(), "{text:?}");
    }
}

#[test]
fn events_are_patterns_or_tables_with_exclusions_and_levels() {
    use ustrace::ctf::field::LogLevel;
    use ustrace::protocol::messages::LogLevelRule;
    let config = parse(
        "[[session]]\nname = \"s\"\n[[session.channel]]\nname = \"c\"\nevents = [\"demo:*\", \
         { pattern = \"net:*\", exclude = [\"net:noisy*\"], loglevel = \"WARNING\" }, \
         { pattern = \"*\", loglevel_only = \"TRACE_DEBUG_LINE\" }]\n",
    )
    .unwrap();
    let rules: Vec<_> = config.sessions[0].channels[0]
        .events
        .iter()
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(rules[0].pattern.as_str(), "demo:*");
    assert_eq!(rules[0].loglevel, LogLevelRule::All);
    assert_eq!(rules[1].exclude[0].as_str(), "net:noisy*");
    assert_eq!(rules[1].loglevel, LogLevelRule::AtLeast(LogLevel::Warning));
    assert_eq!(rules[2].loglevel, LogLevelRule::Only(LogLevel::DebugLine));
    let config = parse(
        "[[session]]\nname = \"s\"\n[[session.channel]]\nname = \"c\"\nevents = \
         [{ pattern = \"net:*\", filter = 'bytes > 10 && peer == \"10.*\"' }]\n",
    )
    .unwrap();
    let rule = &config.sessions[0].channels[0].events[0].0;
    assert_eq!(
        rule.filter.as_ref().map(|f| f.as_str()),
        Some("bytes > 10 && peer == \"10.*\"")
    );
}

#[test]
fn bad_event_tables_are_refused_where_they_are_written() {
    for (table, says) in [
        (
            "{ pattern = \"a:*\", loglevel = \"LOUD\" }",
            "unknown log level \"LOUD\"",
        ),
        (
            "{ pattern = \"a:b\", exclude = [\"a:c\"] }",
            "--exclude needs a pattern with `*`",
        ),
        (
            "{ pattern = \"a:*\", loglevel = \"INFO\", loglevel_only = \"INFO\" }",
            "exclude each other",
        ),
        ("{ exclude = [\"a:c\"] }", "missing field `pattern`"),
        (
            "{ pattern = \"a:*\", filter = \"n == 1 &&\" }",
            "filter: unexpected end of expression, expected a field, a context or a literal \
             at column 10",
        ),
    ] {
        let text = format!(
            "[[session]]\nname = \"s\"\n[[session.channel]]\nname = \"c\"\nevents = [{table}]\n"
        );
        let (_, message) = invalid(&text, "session[0].channel[0].events[0]");
        assert!(message.contains(says), "{table}: {message}");
    }
    let text = "[[session]]\nname = \"s\"\n[[session.channel]]\nname = \"c\"\n\
                events = [{ pattern = \"a:*\", level = \"INFO\" }]\n";
    let (position, message) = invalid(text, "session[0].channel[0].events[0].level");
    assert_eq!(position, Some((5, 30)));
    assert!(message.contains("unknown field `level`"), "{message}");
}

#[test]
fn syntax_errors_give_the_position() {
    let err = parse("[daemon]\nflush_interval_ms = = 5\n").unwrap_err();
    match err {
        ConfigError::Syntax { location, .. } => {
            assert_eq!(location.line_col.map(|p| p.0), Some(2));
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn missing_file_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("absent.toml"), "{err}");
}

#[test]
fn load_reports_the_real_file_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ustraced.toml");
    std::fs::write(&path, "[limits]\nmax_apps = 0\n").unwrap();
    let err = Config::load(&path).unwrap_err();
    let expected = format!("{}:2:12: limits.max_apps", path.display());
    assert!(err.to_string().starts_with(&expected), "{err}");
}

#[test]
fn explicit_directories_win_over_the_environment() {
    let config = parse("[daemon]\nruntime_dir = \"/tmp/rd\"\noutput_dir = \"/tmp/out\"\n").unwrap();
    assert_eq!(
        config.effective_runtime_dir().unwrap(),
        PathBuf::from("/tmp/rd")
    );
    assert_eq!(
        config.effective_output_dir().unwrap(),
        PathBuf::from("/tmp/out")
    );
}

#[test]
fn automatic_directories_follow_the_environment() {
    let config = Config::default();
    assert_eq!(
        config.effective_runtime_dir().unwrap(),
        ustrace::protocol::rundir().unwrap()
    );
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => assert_eq!(
            config.effective_output_dir().unwrap(),
            PathBuf::from(home).join("ustrace-traces")
        ),
        None => assert!(matches!(
            config.effective_output_dir(),
            Err(ConfigError::NoOutputDir)
        )),
    }
}

#[test]
fn pattern_errors_say_which_rule_is_broken() {
    use ustrace::rule::PatternProblem::*;
    for (text, problem) in [
        ("demo:ev-1", BadCharacter('-')),
        ("demo ev", BadCharacter(' ')),
        ("demo\\", BadEscape),
        ("", Empty),
    ] {
        assert_eq!(
            EventPattern::parse(text).unwrap_err().problem,
            problem,
            "{text:?}"
        );
    }
}

#[test]
fn size_strings_parse_on_their_own() {
    assert_eq!("64K".parse::<ByteSize>(), Ok(ByteSize(65536)));
    let err = "17179869184G".parse::<ByteSize>().unwrap_err();
    assert_eq!(err.reason, "does not fit in 64 bits");
}

#[test]
fn the_warm_pool_size_is_bounded() {
    let (_, message) = invalid(
        "[daemon]\nwarm_pid_buffer_sets = 100000\n",
        "daemon.warm_pid_buffer_sets",
    );
    assert!(message.contains("at most 256"), "{message}");
    for size in [0, 256] {
        let text = format!("[daemon]\nwarm_pid_buffer_sets = {size}\n");
        assert_eq!(parse(&text).unwrap().daemon.warm_pid_buffer_sets, size);
    }
}

#[test]
fn a_saved_session_parses_back_to_the_same_declaration() {
    use ustrace::config::{SavedSessions, SessionConfig};
    use ustrace::protocol::messages::SessionInfo;
    let spec = |name: &str, buffers, mode, contexts| ChannelSpec {
        name: name.into(),
        buffers,
        subbuf_size: 8192,
        num_subbuf: 16,
        mode,
        writer: "ctf".into(),
        contexts,
        tracefile: Default::default(),
    };
    let mut limited = spec("a", Buffering::PerUid, Mode::Discard, None);
    limited.tracefile = TracefileLimits {
        size: 64 << 10,
        count: 3,
    };
    let info = SessionInfo {
        name: "web".into(),
        output: "/var/trace/web dir".into(),
        started: false,
        snapshot: false,
        channels: vec![
            (
                limited,
                vec![
                    "http:*".into(),
                    "db:query".into(),
                    "net:* exclude net:poll*,net:idle loglevel <= WARNING".into(),
                    "db:* loglevel == DEBUG_LINE".into(),
                ],
            ),
            (
                spec(
                    "b",
                    Buffering::PerPid,
                    Mode::Overwrite,
                    Some(vec![ContextType::Procname]),
                ),
                Vec::new(),
            ),
        ],
        disabled_channels: vec!["b".into()],
        url: None,
        live_timer_us: 0,
        rotation: ustrace::protocol::messages::RotationSchedule {
            timer_us: Some(10_000_000),
            size: Some(64 << 20),
        },
    };
    let saved = SessionConfig::saved(&info).unwrap();
    let text = toml::to_string(&SavedSessions {
        sessions: std::slice::from_ref(&saved),
    })
    .unwrap();
    let config = parse(&text).unwrap_or_else(|e| panic!("{text}\n{e}"));
    assert_eq!(config.sessions, vec![saved], "{text}");
    assert!(text.contains("rotate_timer = \"10s\""), "{text}");
    assert!(text.contains("rotate_size = 67108864"), "{text}");
    let channels = &config.sessions[0].channels;
    assert!(channels[0].enabled && !channels[1].enabled, "{text}");
    assert_eq!(config.channel_spec(&channels[1]), info.channels[1].0);
    assert_eq!(config.channel_spec(&channels[0]), info.channels[0].0);
    let rules: Vec<String> = channels[0].events.iter().map(|r| r.0.to_string()).collect();
    assert_eq!(rules, info.channels[0].1, "{text}");
}

#[test]
fn tracefile_limits_are_set_in_the_defaults_and_per_channel() {
    let config = parse(
        r#"
[channel_defaults]
subbuf_size = "8K"
tracefile_size = "1M"
tracefile_count = 4

[[session]]
name = "s"
  [[session.channel]]
  name = "inherits"
  [[session.channel]]
  name = "own_count"
  tracefile_count = 2
  [[session.channel]]
  name = "unbounded"
  tracefile_size = 0
  tracefile_count = 0
"#,
    )
    .unwrap();
    let limits = |c: usize| {
        config
            .channel_spec(&config.sessions[0].channels[c])
            .tracefile
    };
    let bound = |size, count| TracefileLimits { size, count };
    assert_eq!(limits(0), bound(1 << 20, 4));
    assert_eq!(limits(1), bound(1 << 20, 2));
    assert_eq!(limits(2), bound(0, 0));
    // `enable-channel` without the flags gets the defaults too.
    assert_eq!(
        config.default_channel_spec("c").tracefile,
        bound(1 << 20, 4)
    );
}

#[test]
fn tracefile_limits_that_cannot_hold_a_stream_are_refused_naming_the_key() {
    let channel = |keys: &str| {
        format!(
            "[[session]]\nname = \"s\"\n  [[session.channel]]\n  name = \"c\"\n  subbuf_size = \"8K\"\n{keys}"
        )
    };
    let (position, message) = invalid(
        &channel("  tracefile_size = \"4K\"\n"),
        "session[0].channel[0].tracefile_size",
    );
    assert_eq!(position, Some((6, 20)));
    assert!(
        message.contains("smaller than a sub-buffer (8192 bytes)"),
        "{message}"
    );
    let (_, message) = invalid(
        &channel("  tracefile_count = 3\n"),
        "session[0].channel[0].tracefile_count",
    );
    assert!(message.contains("needs tracefile_size"), "{message}");
    invalid(
        &channel("  tracefile_count = -1\n"),
        "session[0].channel[0].tracefile_count",
    );
    invalid(
        &channel("  tracefile_size = \"4X\"\n"),
        "session[0].channel[0].tracefile_size",
    );
    // The defaults are checked where they are written, and against a channel's
    // larger sub-buffers there when the channel inherits them.
    invalid(
        "[channel_defaults]\ntracefile_count = 2\n",
        "channel_defaults.tracefile_count",
    );
    invalid(
        "[channel_defaults]\ntracefile_size = \"4K\"\n",
        "channel_defaults.tracefile_size",
    );
    let (_, message) = invalid(
        &format!(
            "[channel_defaults]\ntracefile_size = \"4K\"\nsubbuf_size = \"4K\"\n{}",
            channel("")
        ),
        "channel_defaults.tracefile_size",
    );
    assert!(message.contains("(8192 bytes)"), "{message}");
}

#[test]
fn snapshot_sessions_are_declared_in_the_file_but_not_with_a_url() {
    let config = parse("[[session]]\nname = \"fr\"\nsnapshot = true\n").unwrap();
    assert!(config.sessions[0].snapshot);
    assert!(!parse("[[session]]\nname = \"s\"\n").unwrap().sessions[0].snapshot);
    let (position, message) = invalid(
        "[[session]]\nname = \"fr\"\nurl = \"net://localhost\"\nsnapshot = true\n",
        "session[0].snapshot",
    );
    assert_eq!(position, Some((4, 12)));
    assert!(message.contains("not with url"), "{message}");
    invalid(
        "[[session]]\nname = \"fr\"\nsnapshot = 1\n",
        "session[0].snapshot",
    );
}

#[test]
fn the_dead_apps_a_snapshot_session_keeps_are_bounded() {
    let (_, message) = invalid(
        "[daemon]\nsnapshot_kept_dead_apps = 1025\n",
        "daemon.snapshot_kept_dead_apps",
    );
    assert!(message.contains("at most 1024"), "{message}");
    for kept in [0, 1024] {
        let text = format!("[daemon]\nsnapshot_kept_dead_apps = {kept}\n");
        assert_eq!(parse(&text).unwrap().daemon.snapshot_kept_dead_apps, kept);
    }
    assert_eq!(parse("").unwrap().daemon.snapshot_kept_dead_apps, 16);
}

#[test]
fn direct_io_is_on_by_default_and_takes_only_a_boolean() {
    assert!(parse("").unwrap().daemon.direct_io);
    assert!(
        !parse("[daemon]\ndirect_io = false\n")
            .unwrap()
            .daemon
            .direct_io
    );
    let (_, message) = invalid("[daemon]\ndirect_io = \"yes\"\n", "daemon.direct_io");
    assert!(message.contains("boolean"), "{message}");
}

#[test]
fn rotation_times_take_lttng_units_and_print_back_in_the_largest_exact_one() {
    use ustrace::config::TimeSpan;
    for (text, us, shown) in [
        ("10s", 10_000_000, "10s"),
        ("250ms", 250_000, "250ms"),
        ("1500ms", 1_500_000, "1500ms"),
        ("90m", 5_400_000_000, "90m"),
        ("2h", 7_200_000_000, "2h"),
        ("750", 750, "750us"),
        ("5us", 5, "5us"),
    ] {
        let t: TimeSpan = text.parse().unwrap();
        assert_eq!(t.0, us, "{text}");
        assert_eq!(t.to_string(), shown, "{text}");
    }
    for bad in ["", "s", "10x", "1.5s", "-1s", "99999999999999999999h"] {
        let e = bad.parse::<TimeSpan>().unwrap_err();
        assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
    }
    let config =
        parse("[[session]]\nname = \"r\"\nrotate_timer = \"30s\"\nrotate_size = \"1M\"\n").unwrap();
    assert_eq!(config.sessions[0].rotate_timer, Some(TimeSpan(30_000_000)));
    assert_eq!(config.sessions[0].rotate_size.map(|s| s.0), Some(1 << 20));
    let refused = parse("[[session]]\nname = \"r\"\nrotate_timer = \"30 parsecs\"\n").unwrap_err();
    assert!(refused.to_string().contains("30 parsecs"), "{refused}");
}
