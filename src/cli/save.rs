//! `ustrace save SESSION [FILE]`: a session as the `[[session]]` TOML that
//! `ustraced --config` loads back (LTTng's `save`). The CLI writes the file itself,
//! with the user's own rights: the daemon is never asked to write a path.

use crate::cli::output;
use crate::config::{SavedSessions, SessionConfig};
use crate::control;
use crate::protocol::messages::{ControlOk, ControlRequest};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

/// Asks the daemon for `session` and writes it to `file` (standard output if none).
pub fn run(session: &str, file: Option<&Path>, json: bool) -> ExitCode {
    match saved(session) {
        Err(message) => output::refusal("save", &message, json),
        Ok(text) => match file {
            None if json => output::emit(&format!(
                "{}\n",
                json!({"command": "save", "ok": true, "session": session, "toml": text})
            )),
            None => output::emit(&text),
            Some(path) => match std::fs::write(path, &text) {
                Err(e) => {
                    let message = format!("cannot write {}: {e}", path.display());
                    output::refusal("save", &message, json)
                }
                Ok(()) => {
                    let message = format!("session {session} saved to {}", path.display());
                    let answer = json!({
                        "command": "save",
                        "ok": true,
                        "session": session,
                        "file": path.display().to_string(),
                        "message": message,
                    });
                    match json {
                        true => output::emit(&format!("{answer}\n")),
                        false => output::emit(&format!("{message}\n")),
                    }
                }
            },
        },
    }
}

/// The TOML of `session` as the daemon describes it now.
fn saved(session: &str) -> Result<String, String> {
    let request = ControlRequest::List {
        session: Some(session.to_owned()),
    };
    let answer = control::request(&request).map_err(|e| e.to_string())??;
    let ControlOk::Sessions(sessions) = answer else {
        return Err(format!("the daemon answered list with {answer:?}"));
    };
    let configs = sessions
        .iter()
        .map(SessionConfig::saved)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    toml::to_string(&SavedSessions { sessions: &configs }).map_err(|e| e.to_string())
}
