//! Event rules: which of an app's events a channel records, with LTTng's vocabulary.
//!
//! A rule is a name pattern (LTTng's globbing: `*` anywhere, any number of times,
//! `\*` a literal star, `\\` a literal backslash), the exclusions that take names back
//! out of it (`--exclude`, same globbing) and a log-level condition (`--loglevel`,
//! `--loglevel-only`). The daemon matches rules against each event an app declares
//! (at registration and at late registration), so the app records exactly the events
//! some rule of a channel matches; an event matched by several rules is enabled once.
//! A pattern that matches no event today is accepted (as in LTTng): it starts
//! matching as soon as an app declaring such an event registers.
//!
//! A rule may also carry a filter (`--filter`, see [`crate::filter`]): the event is
//! still enabled by name and level, and the app records an emission only when its
//! values pass the filter of some rule matching it (or some rule without filter
//! matches it).

use crate::ctf::field::{EventDesc, LogLevel};
use crate::filter::glob::{Token, glob_match};
use crate::filter::{Filter, FilterError};
use crate::protocol::messages::LogLevelRule;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest pattern accepted, in bytes (LTTng's `LTTNG_SYMBOL_NAME_LEN` less its NUL).
pub const MAX_PATTERN_LEN: usize = 255;

/// Most exclusions one rule takes.
pub const MAX_EXCLUSIONS: usize = 64;

/// A name pattern over `provider:name`, checked when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPattern {
    /// The pattern as written.
    text: String,
    /// What it matches, one token per character.
    tokens: Vec<Token>,
}

/// Why an event pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event pattern {pattern:?}: {problem}")]
pub struct InvalidPattern {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub problem: PatternProblem,
}

/// The rule an [`InvalidPattern`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatternProblem {
    /// `""`.
    #[error("empty pattern")]
    Empty,
    /// Over [`MAX_PATTERN_LEN`] bytes.
    #[error("longer than {MAX_PATTERN_LEN} bytes")]
    TooLong,
    /// Neither an identifier character, `:`, `*` nor an escape.
    #[error("unexpected character {0:?}")]
    BadCharacter(char),
    /// A `\` last or before anything but `*` or `\`.
    #[error("`\\` must be followed by `*` or `\\`")]
    BadEscape,
}

impl EventPattern {
    /// Checks the syntax: identifier characters, `:`, `*` and the escapes `\*`, `\\`.
    /// Anything else is refused; a well-formed pattern is accepted even when no
    /// event can match it yet (`demo` without `:`, `a:b:c`).
    pub fn parse(text: &str) -> Result<Self, InvalidPattern> {
        let bad = |problem| InvalidPattern {
            pattern: text.to_owned(),
            problem,
        };
        if text.is_empty() {
            return Err(bad(PatternProblem::Empty));
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(bad(PatternProblem::TooLong));
        }
        let mut tokens = Vec::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => Token::Star,
                '\\' => match chars.next() {
                    Some(e @ ('*' | '\\')) => Token::Byte(e as u8),
                    _ => return Err(bad(PatternProblem::BadEscape)),
                },
                c if c.is_ascii_alphanumeric() || c == '_' || c == ':' => Token::Byte(c as u8),
                c => return Err(bad(PatternProblem::BadCharacter(c))),
            };
            // `**` matches what `*` does: keep one, so matching never backtracks twice.
            if !(token == Token::Star && tokens.last() == Some(&Token::Star)) {
                tokens.push(token);
            }
        }
        Ok(EventPattern {
            text: text.to_owned(),
            tokens,
        })
    }

    /// Whether the event `provider:name` is matched by this pattern.
    pub fn matches(&self, provider: &str, name: &str) -> bool {
        let full = format!("{provider}:{name}");
        glob_match(&self.tokens, full.as_bytes())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has an unescaped `*` (LTTng takes exclusions only then).
    pub fn has_wildcard(&self) -> bool {
        self.tokens.contains(&Token::Star)
    }
}

/// LTTng-UST's log-level names, in [`LogLevel`] order (`EMERG` is 0, `DEBUG` 14).
const LEVEL_NAMES: [(&str, LogLevel); 15] = [
    ("EMERG", LogLevel::Emerg),
    ("ALERT", LogLevel::Alert),
    ("CRIT", LogLevel::Crit),
    ("ERR", LogLevel::Err),
    ("WARNING", LogLevel::Warning),
    ("NOTICE", LogLevel::Notice),
    ("INFO", LogLevel::Info),
    ("DEBUG_SYSTEM", LogLevel::DebugSystem),
    ("DEBUG_PROGRAM", LogLevel::DebugProgram),
    ("DEBUG_PROCESS", LogLevel::DebugProcess),
    ("DEBUG_MODULE", LogLevel::DebugModule),
    ("DEBUG_UNIT", LogLevel::DebugUnit),
    ("DEBUG_FUNCTION", LogLevel::DebugFunction),
    ("DEBUG_LINE", LogLevel::DebugLine),
    ("DEBUG", LogLevel::Debug),
];

/// A log level that is none of LTTng-UST's names or numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown log level {0:?}: expected one of EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, \
     DEBUG_SYSTEM, DEBUG_PROGRAM, DEBUG_PROCESS, DEBUG_MODULE, DEBUG_UNIT, DEBUG_FUNCTION, \
     DEBUG_LINE, DEBUG (optionally prefixed TRACE_), or a number 0 to 14"
)]
pub struct InvalidLogLevel(pub String);

/// Parses a log level as `lttng enable-event --loglevel` takes it: a name with or
/// without `TRACE_`, in any case (`WARNING`, `trace_debug_line`), or its number.
pub fn parse_loglevel(text: &str) -> Result<LogLevel, InvalidLogLevel> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("TRACE_").unwrap_or(&upper);
    if let Ok(number) = name.parse::<usize>() {
        return LEVEL_NAMES
            .get(number)
            .map(|(_, level)| *level)
            .ok_or_else(|| InvalidLogLevel(text.to_owned()));
    }
    LEVEL_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, level)| *level)
        .ok_or_else(|| InvalidLogLevel(text.to_owned()))
}

/// LTTng-UST's name of `level` (`TRACE_` left off), for `list` and saved configs.
pub fn loglevel_name(level: LogLevel) -> &'static str {
    LEVEL_NAMES[level as usize].0
}

impl LogLevelRule {
    /// Whether an event of `level` passes: any level, `level` and more severe (a
    /// lower or equal number, LTTng's `--loglevel`), or exactly `level`.
    pub fn admits(self, level: LogLevel) -> bool {
        match self {
            LogLevelRule::All => true,
            LogLevelRule::AtLeast(limit) => (level as u8) <= (limit as u8),
            LogLevelRule::Only(only) => level == only,
        }
    }
}

impl fmt::Display for LogLevelRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogLevelRule::All => Ok(()),
            LogLevelRule::AtLeast(l) => write!(f, " loglevel <= {}", loglevel_name(*l)),
            LogLevelRule::Only(l) => write!(f, " loglevel == {}", loglevel_name(*l)),
        }
    }
}

/// One `enable-event`: a pattern, what it excludes, and which levels it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRule {
    /// Names the rule takes.
    pub pattern: EventPattern,
    /// Names taken back out of `pattern`.
    pub exclude: Vec<EventPattern>,
    /// Levels the rule takes.
    pub loglevel: LogLevelRule,
    /// The values it takes (`--filter`); `None`: every emission.
    pub filter: Option<Filter>,
}

/// Why an event rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRule {
    /// The pattern or an exclusion is malformed.
    #[error(transparent)]
    Pattern(#[from] InvalidPattern),
    /// `--exclude` with a pattern that has no `*` (LTTng refuses it too).
    #[error("--exclude needs a pattern with `*`, and {0:?} has none")]
    ExcludeWithoutWildcard(String),
    /// More than [`MAX_EXCLUSIONS`] exclusions.
    #[error("{0} exclusions, at most {MAX_EXCLUSIONS}")]
    TooManyExclusions(usize),
    /// A level name that is not LTTng-UST's.
    #[error(transparent)]
    LogLevel(#[from] InvalidLogLevel),
    /// A level condition other than `loglevel <= L` or `loglevel == L`.
    #[error("bad level condition {0:?}: expected `<= LEVEL` or `== LEVEL`")]
    Condition(String),
    /// A malformed `--filter` expression.
    #[error(transparent)]
    Filter(#[from] FilterError),
}

impl EventRule {
    /// A rule from its wire or config parts, each checked.
    pub fn new(
        pattern: &str,
        exclude: &[String],
        loglevel: LogLevelRule,
    ) -> Result<EventRule, InvalidRule> {
        let pattern = EventPattern::parse(pattern)?;
        if exclude.len() > MAX_EXCLUSIONS {
            return Err(InvalidRule::TooManyExclusions(exclude.len()));
        }
        if !exclude.is_empty() && !pattern.has_wildcard() {
            return Err(InvalidRule::ExcludeWithoutWildcard(pattern.text));
        }
        let exclude = exclude
            .iter()
            .map(|x| EventPattern::parse(x))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EventRule {
            pattern,
            exclude,
            loglevel,
            filter: None,
        })
    }

    /// The rule taking only the emissions that pass `filter` (`--filter`; `None`:
    /// all of them).
    pub fn with_filter(mut self, filter: Option<&str>) -> Result<EventRule, InvalidRule> {
        self.filter = filter.map(Filter::parse).transpose()?;
        Ok(self)
    }

    /// A rule taking every name `pattern` matches, at every level.
    pub fn all(pattern: EventPattern) -> EventRule {
        EventRule {
            pattern,
            exclude: Vec::new(),
            loglevel: LogLevelRule::All,
            filter: None,
        }
    }

    /// Whether `event` is enabled by this rule: its name matches the pattern and no
    /// exclusion, and its level passes (its filter, if any, then runs in the app).
    pub fn matches(&self, event: &EventDesc) -> bool {
        self.loglevel.admits(event.loglevel)
            && self.pattern.matches(&event.provider, &event.name)
            && !self
                .exclude
                .iter()
                .any(|x| x.matches(&event.provider, &event.name))
    }
}

impl fmt::Display for EventRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.pattern.as_str())?;
        if !self.exclude.is_empty() {
            let names: Vec<&str> = self.exclude.iter().map(EventPattern::as_str).collect();
            write!(f, " exclude {}", names.join(","))?;
        }
        write!(f, "{}", self.loglevel)?;
        match &self.filter {
            Some(filter) => write!(f, " filter {filter}"),
            None => Ok(()),
        }
    }
}

impl FromStr for EventRule {
    type Err = InvalidRule;

    /// Reads a rule back from its `Display` text, as `list` shows it:
    /// `PATTERN[ exclude X,Y][ loglevel <= LEVEL| loglevel == LEVEL][ filter EXPR]`
    /// (patterns hold neither spaces nor commas, and the filter comes last, so the
    /// first ` filter ` starts it and the text is unambiguous).
    fn from_str(text: &str) -> Result<EventRule, InvalidRule> {
        let (text, filter) = match text.split_once(" filter ") {
            None => (text, None),
            Some((rest, filter)) => (rest, Some(filter)),
        };
        let (rest, loglevel) = match text.split_once(" loglevel ") {
            None => (text, LogLevelRule::All),
            Some((rest, condition)) => match condition.split_once(' ') {
                Some(("<=", level)) => (rest, LogLevelRule::AtLeast(parse_loglevel(level)?)),
                Some(("==", level)) => (rest, LogLevelRule::Only(parse_loglevel(level)?)),
                _ => return Err(InvalidRule::Condition(condition.to_owned())),
            },
        };
        let (pattern, exclude) = match rest.split_once(" exclude ") {
            None => (rest, Vec::new()),
            Some((pattern, names)) => (pattern, names.split(',').map(str::to_owned).collect()),
        };
        EventRule::new(pattern, &exclude, loglevel)?.with_filter(filter)
    }
}

/// An event rule as a config file writes it: a pattern string, or a table with
/// `pattern` and optional `exclude`, `loglevel`, `loglevel_only`, `filter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRule(pub EventRule);

/// The table form of [`ConfigRule`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleTable {
    /// The name pattern.
    pattern: String,
    /// Exclusions.
    #[serde(default)]
    exclude: Vec<String>,
    /// `--loglevel`.
    #[serde(default)]
    loglevel: Option<String>,
    /// `--loglevel-only`.
    #[serde(default)]
    loglevel_only: Option<String>,
    /// `--filter`.
    #[serde(default)]
    filter: Option<String>,
}

impl RuleTable {
    /// Checks the table as `enable-event` checks its options.
    fn rule(self) -> Result<EventRule, String> {
        let level = |text: &str| parse_loglevel(text).map_err(|e| e.to_string());
        let loglevel = match (self.loglevel, self.loglevel_only) {
            (Some(_), Some(_)) => {
                return Err("loglevel and loglevel_only exclude each other".into());
            }
            (Some(l), None) => LogLevelRule::AtLeast(level(&l)?),
            (None, Some(l)) => LogLevelRule::Only(level(&l)?),
            (None, None) => LogLevelRule::All,
        };
        EventRule::new(&self.pattern, &self.exclude, loglevel)
            .and_then(|rule| rule.with_filter(self.filter.as_deref()))
            .map_err(|e| e.to_string())
    }
}

impl Serialize for ConfigRule {
    /// As the config accepts it: the pattern string alone for a rule without
    /// exclusions, level or filter, else the `{ pattern, exclude, loglevel |
    /// loglevel_only, filter }` table.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let rule = &self.0;
        if rule.exclude.is_empty() && rule.loglevel == LogLevelRule::All && rule.filter.is_none() {
            return serializer.serialize_str(rule.pattern.as_str());
        }
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("pattern", rule.pattern.as_str())?;
        if !rule.exclude.is_empty() {
            let names: Vec<&str> = rule.exclude.iter().map(EventPattern::as_str).collect();
            map.serialize_entry("exclude", &names)?;
        }
        match rule.loglevel {
            LogLevelRule::All => {}
            LogLevelRule::AtLeast(l) => map.serialize_entry("loglevel", loglevel_name(l))?,
            LogLevelRule::Only(l) => map.serialize_entry("loglevel_only", loglevel_name(l))?,
        }
        if let Some(filter) = &rule.filter {
            map.serialize_entry("filter", filter.as_str())?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ConfigRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// A string (a pattern alone) or a table (a whole rule), checked in place so
        /// an error carries the rule's position.
        struct RuleVisitor;

        impl<'de> Visitor<'de> for RuleVisitor {
            type Value = ConfigRule;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an event pattern such as \"provider:*\", or a table \
                     { pattern, exclude, loglevel, loglevel_only, filter }",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigRule, E> {
                EventPattern::parse(v)
                    .map(|p| ConfigRule(EventRule::all(p)))
                    .map_err(E::custom)
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ConfigRule, A::Error> {
                let table = RuleTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                table.rule().map(ConfigRule).map_err(de::Error::custom)
            }
        }

        deserializer.deserialize_any(RuleVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(full: &str, loglevel: LogLevel) -> EventDesc {
        let (provider, name) = full.split_once(':').unwrap();
        EventDesc {
            model_emf_uri: None,
            provider: provider.into(),
            name: name.into(),
            loglevel,
            fields: Vec::new(),
        }
    }

    #[test]
    fn a_rule_reads_back_from_its_text() {
        let rules = [
            EventRule::new("demo:*", &[], LogLevelRule::All),
            EventRule::new(
                "net:*",
                &["net:poll*".into(), "n\\*x".into()],
                LogLevelRule::AtLeast(LogLevel::Warning),
            ),
            EventRule::new("a*b", &[], LogLevelRule::Only(LogLevel::DebugLine)),
            EventRule::new(
                "net:*",
                &["net:x".into()],
                LogLevelRule::AtLeast(LogLevel::Info),
            )
            .and_then(|r| r.with_filter(Some("peer == \"a filter b*\" && bytes > 1"))),
            EventRule::new("a:b", &[], LogLevelRule::All)
                .and_then(|r| r.with_filter(Some("s == \" loglevel <= INFO\""))),
        ];
        for rule in rules {
            let rule = rule.unwrap();
            assert_eq!(
                rule.to_string().parse::<EventRule>(),
                Ok(rule.clone()),
                "{rule}"
            );
        }
        assert!(matches!(
            "x* loglevel >= INFO".parse::<EventRule>(),
            Err(InvalidRule::Condition(_))
        ));
        assert!(matches!(
            "x* loglevel <= LOUD".parse::<EventRule>(),
            Err(InvalidRule::LogLevel(_))
        ));
        assert!(matches!(
            "x* filter a ==".parse::<EventRule>(),
            Err(InvalidRule::Filter(_))
        ));
    }

    #[test]
    fn patterns_follow_lttngs_globbing() {
        // (pattern, provider:name, matches)
        let table: &[(&str, &str, bool)] = &[
            ("demo:ev", "demo:ev", true),
            ("demo:ev", "demo:ev2", false),
            ("demo:ev", "xdemo:ev", false),
            ("demo:*", "demo:anything", true),
            ("demo:*", "demo2:anything", false),
            ("dem*", "demo2:x", true),
            ("*", "any:thing", true),
            ("*ev", "demo:ev", true),
            ("*ev", "demo:evx", false),
            ("demo*ev", "demo:ev", true),
            ("demo*ev", "demo:my_ev", true),
            ("demo*ev", "demo:eve", false),
            ("*:*", "a:b", true),
            ("*o*e*", "demo:ev", true),
            ("*o*e*", "dmx:ab", false),
            ("d**v", "demo:ev", true),
            ("*a*a*a*b", "aaaa:aaaa", false),
            ("*a*a*a*b", "aaaa:aaab", true),
            ("demo", "demo:ev", false),
            ("a:b:c", "a:b", false),
            (r"demo:\*", "demo:x", false),
            (r"demo:\\*", "demo:x", false),
        ];
        for &(pattern, full, expected) in table {
            let (provider, name) = full.split_once(':').unwrap();
            let p = EventPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(provider, name), expected, "{pattern} ~ {full}");
        }
    }

    #[test]
    fn escapes_match_the_literal_character() {
        let star = |p: &str| EventPattern::parse(p).unwrap();
        assert_eq!(
            star(r"a\*").tokens,
            vec![Token::Byte(b'a'), Token::Byte(b'*')]
        );
        assert!(glob_match(&star(r"a\*").tokens, b"a*"));
        assert!(!glob_match(&star(r"a\*").tokens, b"ab"));
        assert!(glob_match(&star(r"a\\").tokens, b"a\\"));
        assert!(glob_match(&star(r"*\**").tokens, b"x*y"));
        assert!(!star(r"a\*").has_wildcard());
        assert!(star(r"a\**").has_wildcard());
    }

    #[test]
    fn malformed_patterns_say_what_is_wrong() {
        use PatternProblem::*;
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        for (text, problem) in [
            ("", Empty),
            (long.as_str(), TooLong),
            ("demo:ev-1", BadCharacter('-')),
            ("demo ev", BadCharacter(' ')),
            ("demo:é", BadCharacter('é')),
            (r"demo\", BadEscape),
            (r"demo\x", BadEscape),
        ] {
            assert_eq!(
                EventPattern::parse(text).unwrap_err().problem,
                problem,
                "{text:?}"
            );
        }
        assert!(EventPattern::parse(&"a".repeat(MAX_PATTERN_LEN)).is_ok());
    }

    #[test]
    fn log_levels_take_lttngs_names_and_numbers() {
        for (text, level) in [
            ("EMERG", LogLevel::Emerg),
            ("TRACE_EMERG", LogLevel::Emerg),
            ("0", LogLevel::Emerg),
            ("warning", LogLevel::Warning),
            ("TRACE_DEBUG_LINE", LogLevel::DebugLine),
            ("13", LogLevel::DebugLine),
            ("debug", LogLevel::Debug),
            ("14", LogLevel::Debug),
            ("TRACE_INFO", LogLevel::Info),
        ] {
            assert_eq!(parse_loglevel(text), Ok(level), "{text}");
        }
        for bad in ["", "15", "WARN", "TRACE_", "-1", "DEBUG_LINES"] {
            assert!(parse_loglevel(bad).is_err(), "{bad}");
        }
        for (name, level) in LEVEL_NAMES {
            assert_eq!(loglevel_name(level), name);
            assert_eq!(parse_loglevel(&(level as u8).to_string()), Ok(level));
        }
    }

    #[test]
    fn rules_combine_pattern_exclusions_and_levels() {
        use LogLevel::*;
        use LogLevelRule::*;
        let rule = |p: &str, x: &[&str], l| {
            let x: Vec<String> = x.iter().map(|s| s.to_string()).collect();
            EventRule::new(p, &x, l).unwrap()
        };
        // (rule, event, level, recorded)
        let table = [
            (rule("demo:*", &[], All), "demo:ev", Debug, true),
            (rule("demo:*", &["demo:ev"], All), "demo:ev", Info, false),
            (rule("demo:*", &["demo:ev"], All), "demo:ev2", Info, true),
            (rule("demo:*", &["demo:e*"], All), "demo:ev2", Info, false),
            (
                rule("*", &["demo:*", "net:*"], All),
                "net:recv",
                Info,
                false,
            ),
            (rule("*", &["demo:*", "net:*"], All), "lib:x", Info, true),
            (rule("*", &[], AtLeast(Warning)), "a:b", Warning, true),
            (rule("*", &[], AtLeast(Warning)), "a:b", Emerg, true),
            (rule("*", &[], AtLeast(Warning)), "a:b", Notice, false),
            (rule("*", &[], AtLeast(DebugLine)), "a:b", Debug, false),
            (rule("*", &[], AtLeast(Debug)), "a:b", Debug, true),
            (rule("*", &[], Only(Warning)), "a:b", Warning, true),
            (rule("*", &[], Only(Warning)), "a:b", Err, false),
            (rule("a:*", &["a:c"], Only(Info)), "a:b", Info, true),
            (rule("a:*", &["a:c"], Only(Info)), "a:c", Info, false),
        ];
        for (rule, full, level, expected) in table {
            assert_eq!(
                rule.matches(&event(full, level)),
                expected,
                "{rule} ~ {full} {level:?}"
            );
        }
    }

    #[test]
    fn exclusions_need_a_wildcard_and_are_bounded() {
        let x = vec!["demo:ev".to_string()];
        assert_eq!(
            EventRule::new("demo:ev", &x, LogLevelRule::All),
            Err(InvalidRule::ExcludeWithoutWildcard("demo:ev".into()))
        );
        let bad = vec!["de mo".to_string()];
        assert!(matches!(
            EventRule::new("demo:*", &bad, LogLevelRule::All),
            Err(InvalidRule::Pattern(_))
        ));
        let many = vec!["a:b".to_string(); MAX_EXCLUSIONS + 1];
        assert_eq!(
            EventRule::new("*", &many, LogLevelRule::All),
            Err(InvalidRule::TooManyExclusions(MAX_EXCLUSIONS + 1))
        );
    }
}
