//! The control socket's edge: the CLI's wire requests in, the CLI's answers out.
//!
//! `control.sock` speaks [`ControlRequest`] / [`ControlReply`] (docs/protocol.md);
//! the actors speak domain messages and typed errors. This is the one place that
//! translates between them: each wire request becomes the SessionManager's message
//! (an event rule is parsed here, so a bad one never reaches an actor), and each
//! answer or error becomes the text the CLI prints. `status` is read from the
//! daemon's counters directly: no actor owns it.

use crate::actors::session::{
    AddContext, CreateSession, DestroySession, DisableChannel, DisableEvent, DisableRotation,
    EnableChannel, EnableEvent, EnableRotation, ListApps, ListSessions, RecordSnapshot,
    RotateSession, SessionManager, StartSession, StopSession,
};
use crate::actors::stats::Stats;
use crate::protocol::messages::{ControlOk, ControlReply, ControlRequest};
use crate::rule::EventRule;
use actix::prelude::*;
use std::path::PathBuf;

/// Answers one wire request: the SessionManager's answer, or why there is none,
/// as the text the CLI shows.
pub async fn answer(
    request: ControlRequest,
    sessions: &Addr<SessionManager>,
    stats: &Stats,
) -> ControlReply {
    let done = match request {
        ControlRequest::Create {
            name,
            output,
            url,
            live_timer_us,
        } => {
            let create = CreateSession {
                url,
                live_timer_us,
                ..create(name, output, false)
            };
            sessions.send(create).await
        }
        ControlRequest::CreateSnapshot { name, output } => {
            sessions.send(create(name, output, true)).await
        }
        ControlRequest::SnapshotRecord {
            session,
            output,
            max_size,
        } => {
            let output = output.map(PathBuf::from);
            sessions
                .send(RecordSnapshot {
                    session,
                    output,
                    max_size,
                })
                .await
        }
        ControlRequest::Rotate { session } => {
            sessions
                .send(RotateSession {
                    session,
                    clear: false,
                })
                .await
        }
        ControlRequest::Clear { session } => {
            sessions
                .send(RotateSession {
                    session,
                    clear: true,
                })
                .await
        }
        ControlRequest::EnableRotation { session, schedule } => {
            sessions.send(EnableRotation { session, schedule }).await
        }
        ControlRequest::DisableRotation {
            session,
            timer,
            size,
        } => {
            sessions
                .send(DisableRotation {
                    session,
                    timer,
                    size,
                })
                .await
        }
        ControlRequest::EnableChannel { session, channel } => {
            sessions.send(EnableChannel { session, channel }).await
        }
        ControlRequest::EnableEvent {
            session,
            channel,
            pattern,
            exclude,
            loglevel,
            filter,
        } => {
            let rule = EventRule::new(&pattern, &exclude, loglevel)
                .and_then(|rule| rule.with_filter(filter.as_deref()))
                .map_err(|e| e.to_string())?;
            sessions
                .send(EnableEvent {
                    session,
                    channel,
                    rule,
                })
                .await
        }
        ControlRequest::Start { session } => sessions.send(StartSession { session }).await,
        ControlRequest::Stop { session } => sessions.send(StopSession { session }).await,
        ControlRequest::Destroy { session } => sessions.send(DestroySession { session }).await,
        ControlRequest::List { session } => {
            return match sessions.send(ListSessions { session }).await {
                Ok(Ok(list)) => Ok(ControlOk::Sessions(list)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(busy(e)),
            };
        }
        ControlRequest::Status => return Ok(ControlOk::Status(Box::new(stats.report()))),
        ControlRequest::AddContext {
            session,
            channel,
            contexts,
        } => {
            sessions
                .send(AddContext {
                    session,
                    channel,
                    contexts,
                })
                .await
        }
        ControlRequest::ListApps => {
            return match sessions.send(ListApps).await {
                Ok(Ok(apps)) => Ok(ControlOk::Apps(apps)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(busy(e)),
            };
        }
        ControlRequest::DisableEvent {
            session,
            channel,
            pattern,
        } => {
            sessions
                .send(DisableEvent {
                    session,
                    channel,
                    pattern,
                })
                .await
        }
        ControlRequest::DisableChannel { session, channel } => {
            sessions.send(DisableChannel { session, channel }).await
        }
    };
    match done {
        Ok(Ok(message)) => Ok(ControlOk::Done(message)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(busy(e)),
    }
}

/// The SessionManager's message for `Create` and `CreateSnapshot`.
fn create(name: String, output: Option<String>, snapshot: bool) -> CreateSession {
    CreateSession {
        name,
        output: output.map(PathBuf::from),
        url: None,
        live_timer_us: None,
        snapshot,
    }
}

/// The answer when the SessionManager cannot take a request.
fn busy(e: MailboxError) -> String {
    format!("daemon busy: {e}")
}
