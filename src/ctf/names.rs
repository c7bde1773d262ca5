//! Names that come from apps, made safe before they reach the file system or the
//! metadata text (see /work/shared/design/THREATS.md: "names → file system",
//! "names → metadata text").
//!
//! - [`procname`] turns whatever an app calls itself into one safe file-name
//!   component, as LTTng does with the kernel's `comm`: at most 15 bytes, no `/`.
//! - [`check_component`] is what every directory or file name below a session's
//!   output must pass before the daemon creates it.
//! - [`check_event`] refuses, at registration, an event whose provider, name,
//!   field names or enum labels TSDL cannot declare, naming the bad one.

/// Longest procname kept, in bytes: the kernel's `comm` is 16 bytes with its NUL.
pub const PROCNAME_MAX: usize = 15;

/// Longest provider, event or field name and enum label accepted, in bytes.
pub const NAME_MAX: usize = 255;

/// What a procname becomes when nothing of it is left (empty, or only control
/// characters).
const UNNAMED: &str = "unnamed";

/// Why a name was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// A provider, event or field name that is not a C identifier.
    #[error("{what} {name} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)")]
    NotIdentifier {
        /// `provider`, `event name` or `field` and where it is.
        what: String,
        /// The name as shown to the user (escaped, cut if long).
        name: String,
    },
    /// A name or label longer than [`NAME_MAX`] bytes.
    #[error("{what} {name} is {len} bytes long, more than {NAME_MAX}")]
    TooLong {
        /// What kind of name, and where it is.
        what: String,
        /// The name as shown to the user (escaped, cut).
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// An event's `model.emf.uri` longer than [`URI_MAX`] bytes.
    #[error("{what} {name} is {len} bytes long, more than {URI_MAX}")]
    UriTooLong {
        /// The event whose attribute it is.
        what: String,
        /// The URI as shown to the user (escaped, cut).
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// An enum label that is empty or holds control characters (a NUL among them),
    /// or an event's `model.emf.uri` that holds some.
    #[error("{what} {name} is empty or holds control characters")]
    BadLabel {
        /// The enum field the label belongs to.
        what: String,
        /// The label as shown to the user (escaped, cut if long).
        name: String,
    },
    /// A path component that is empty, `.`, `..`, or holds `/` or NUL.
    #[error("{name} is not a single file name")]
    NotComponent {
        /// The component as shown to the user (escaped, cut if long).
        name: String,
    },
}

/// `name` quoted and escaped for a message, cut after 64 characters: a refusal
/// echoes a 10k-character name or a NUL without flooding or breaking a log line.
pub fn shown(name: &str) -> String {
    const SHOWN_MAX: usize = 64;
    let count = name.chars().count();
    if count <= SHOWN_MAX {
        return format!("{name:?}");
    }
    let cut: String = name.chars().take(SHOWN_MAX).collect();
    format!("{cut:?}... ({count} characters)")
}

/// The safe file-name component for an app that calls itself `raw`: control
/// characters (NUL among them) dropped, `/` replaced by `_`, cut to
/// [`PROCNAME_MAX`] bytes on a character boundary, a leading `.` replaced by `_`
/// (so neither `.` nor `..` nor a hidden name), [`UNNAMED`] if nothing is left.
/// Used for the per-PID directory name and the metadata's `procname` alike.
pub fn procname(raw: &str) -> String {
    let mut name = String::with_capacity(PROCNAME_MAX);
    for c in raw.chars().filter(|c| !c.is_control()) {
        let c = if c == '/' { '_' } else { c };
        if name.len() + c.len_utf8() > PROCNAME_MAX {
            break;
        }
        name.push(c);
    }
    if name.starts_with('.') {
        name.replace_range(..1, "_");
    }
    if name.is_empty() {
        name.push_str(UNNAMED);
    }
    name
}

/// Checks that `name` is one file name the daemon may create below an output
/// directory: not empty, not `.` or `..`, no `/`, no NUL.
pub fn check_component(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(NameError::NotComponent { name: shown(name) });
    }
    Ok(())
}

/// Whether `name` is a C identifier, the form TSDL declares names in.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks that `name` (a `what`) is an identifier of at most [`NAME_MAX`] bytes.
pub fn check_identifier(what: &str, name: &str) -> Result<(), NameError> {
    if name.len() > NAME_MAX {
        return Err(NameError::TooLong {
            what: what.to_string(),
            name: shown(name),
            len: name.len(),
        });
    }
    if !is_identifier(name) {
        return Err(NameError::NotIdentifier {
            what: what.to_string(),
            name: shown(name),
        });
    }
    Ok(())
}

/// Checks that an enum label can be written as a TSDL string literal: not empty,
/// no control character, at most [`NAME_MAX`] bytes (`"` and `\` are escaped when
/// the metadata is rendered).
pub fn check_label(what: &str, label: &str) -> Result<(), NameError> {
    if label.len() > NAME_MAX {
        return Err(NameError::TooLong {
            what: what.to_string(),
            name: shown(label),
            len: label.len(),
        });
    }
    if label.is_empty() || label.chars().any(char::is_control) {
        return Err(NameError::BadLabel {
            what: what.to_string(),
            name: shown(label),
        });
    }
    Ok(())
}

/// Most bytes of an event's `model.emf.uri`: room for a long module path and
/// file path, bounded so that a registration cannot grow the metadata without end.
pub const URI_MAX: usize = 1024;

/// Checks that an event's `model.emf.uri` can be written as a TSDL string
/// literal: at most [`URI_MAX`] bytes, no control character (a NUL among them).
pub fn check_uri(event: &str, uri: &str) -> Result<(), NameError> {
    let what = format!("event {event}: model.emf.uri");
    if uri.len() > URI_MAX {
        return Err(NameError::UriTooLong {
            what,
            name: shown(uri),
            len: uri.len(),
        });
    }
    if uri.chars().any(char::is_control) {
        return Err(NameError::BadLabel {
            what,
            name: shown(uri),
        });
    }
    Ok(())
}

/// Checks every name of `desc` that reaches the metadata: provider, event name,
/// field names, enum labels, and its `model.emf.uri`.
pub fn check_event(desc: &crate::ctf::field::EventDesc) -> Result<(), NameError> {
    check_identifier("provider", &desc.provider)?;
    check_identifier(
        &format!("provider {}: event name", desc.provider),
        &desc.name,
    )?;
    let event = || format!("event {}:{}", desc.provider, desc.name);
    if let Some(uri) = &desc.model_emf_uri {
        check_uri(&desc.full_name(), uri)?;
    }
    for field in &desc.fields {
        check_identifier(&format!("{}: field", event()), &field.name)?;
        if let crate::ctf::field::FieldType::Enum { labels, .. } = &field.ty {
            for (label, _) in labels {
                check_label(
                    &format!("{}: enum field {} label", event(), field.name),
                    label,
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctf::field::{EventDesc, FieldDesc, FieldType, LogLevel};

    #[test]
    fn a_procname_becomes_one_short_safe_component() {
        for (raw, safe) in [
            ("app", "app"),
            ("../../../../x", "_._.._.._.._x"),
            ("/abs/x", "_abs_x"),
            ("a/b", "a_b"),
            ("a\0b", "ab"),
            ("a\nb\x7f", "ab"),
            ("..", "_."),
            (".", "_"),
            (".hidden", "_hidden"),
            ("", "unnamed"),
            ("\0\0", "unnamed"),
            ("0123456789abcdefXYZ", "0123456789abcde"),
            ("ééééééééé", "ééééééé"),
        ] {
            assert_eq!(procname(raw), safe, "{raw:?}");
            assert!(check_component(&procname(raw)).is_ok());
            assert!(procname(raw).len() <= PROCNAME_MAX);
            assert_eq!(procname(&procname(raw)), procname(raw), "idempotent");
        }
        assert_eq!(procname(&"x".repeat(300)), "x".repeat(15));
    }

    #[test]
    fn a_component_is_one_file_name() {
        for bad in ["", ".", "..", "a/b", "/", "a\0"] {
            assert!(check_component(bad).is_err(), "{bad:?}");
        }
        for good in ["ust", "64-bit", "app-42-20261127-083456", "chan_0", "..a"] {
            assert!(check_component(good).is_ok(), "{good:?}");
        }
    }

    fn event(provider: &str, name: &str, fields: Vec<FieldDesc>) -> EventDesc {
        EventDesc {
            model_emf_uri: None,
            provider: provider.into(),
            name: name.into(),
            loglevel: LogLevel::Info,
            fields,
        }
    }

    #[test]
    fn events_with_names_tsdl_cannot_declare_are_refused_naming_the_name() {
        let field = |name: &str, ty| FieldDesc {
            name: name.into(),
            ty,
        };
        assert!(check_event(&event("demo", "ev", vec![field("x", FieldType::Bool)])).is_ok());
        let nul = check_event(&event("demo", "a\0b", vec![])).unwrap_err();
        assert!(nul.to_string().contains(r#""a\0b""#), "{nul}");
        let space = check_event(&event("demo", "ev", vec![field("a b", FieldType::Bool)]));
        assert!(space.unwrap_err().to_string().contains("\"a b\""));
        let long = check_event(&event(&"p".repeat(10_000), "ev", vec![])).unwrap_err();
        assert!(
            matches!(long, NameError::TooLong { len: 10_000, .. }),
            "{long}"
        );
        assert!(long.to_string().len() < 300, "{long}");
        assert!(check_event(&event("9p", "ev", vec![])).is_err());
        assert!(check_event(&event("p", "", vec![])).is_err());
        assert!(check_event(&event("p:q", "ev", vec![])).is_err());
        let labels = |label: &str| {
            vec![field(
                "e",
                FieldType::Enum {
                    bits: 8,
                    signed: false,
                    labels: vec![(label.into(), 1)],
                },
            )]
        };
        assert!(check_event(&event("p", "e", labels("RED \"x\" \\"))).is_ok());
        for bad in ["", "a\0b", "a\nb", &"L".repeat(256)] {
            assert!(
                check_event(&event("p", "e", labels(bad))).is_err(),
                "{bad:?}"
            );
        }
    }
}
