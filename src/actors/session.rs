//! SessionManager: sessions, channels and event rules, driven by the CLI and the
//! config file.
//!
//! It validates each control request, keeps the definitions, and tells the
//! BufferFactory (`SessionsChanged`) whenever what apps should record changes, so
//! that apps registered before a `start` or an `enable-event` receive their buffers and
//! enablement over their open connection. `stop` answers only once the factory has
//! flushed every ring of the session to disk.

use crate::actors::buffer_factory::{
    BufferFactory, DestroySession, ListApps, SessionsChanged, StopSession,
};
use crate::actors::stats::Stats;
use crate::actors::writer::release_freed_heap;
use crate::config::{EventPattern, check_name};
use crate::ctf::context::ContextSet;
use crate::ctf::field::EventDesc;
use crate::ctf::trace_writer::OutputDir;
use crate::ctf::{layout, spread};
use crate::protocol::messages::{
    Buffering, ChannelSpec, ControlOk, ControlReply, ControlRequest, SessionInfo,
};
use actix::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// A channel of a session and the event patterns enabled in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelDef {
    /// Geometry, mode, buffering and writer.
    pub spec: ChannelSpec,
    /// `provider:name`, `provider:*` or `*` patterns.
    pub patterns: Vec<EventPattern>,
}

impl ChannelDef {
    /// Whether the event `provider:name` is enabled in this channel.
    pub fn matches(&self, event: &EventDesc) -> bool {
        self.patterns
            .iter()
            .any(|p| p.matches(&event.provider, &event.name))
    }
}

/// A tracing session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDef {
    /// Unique name.
    pub name: String,
    /// Output directory of the whole session, opened once for all its traces.
    pub output: OutputDir,
    /// When it was created: its traces' `trace_creation_datetime`.
    pub created: SystemTime,
    /// Whether it records now.
    pub started: bool,
    /// Whether it was ever started: channels can be added only before.
    pub ever_started: bool,
    /// Channels in stream-id order.
    pub channels: Vec<ChannelDef>,
}

/// What the SessionManager needs to know about the deployment.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// Parent of default session output directories.
    pub output_dir: PathBuf,
    /// `[channel_defaults]`, named `channel0`: what `enable-channel` leaves unset,
    /// and the channel `enable-event` creates in a session that has none.
    pub default_channel: ChannelSpec,
    /// Names of the registered writers.
    pub writers: Vec<String>,
}

/// The actor.
pub struct SessionManager {
    /// Deployment settings.
    settings: SessionSettings,
    /// Sessions in creation order.
    sessions: Vec<SessionDef>,
    /// The factory, told of every change.
    factory: Addr<BufferFactory>,
    /// Daemon counters, for `status`.
    stats: Arc<Stats>,
}

/// A request from the CLI (or from the config file at start-up).
#[derive(Message)]
#[rtype(result = "ControlReply")]
pub struct Control(pub ControlRequest);

impl SessionManager {
    /// A manager with no session.
    pub fn new(settings: SessionSettings, factory: Addr<BufferFactory>, stats: Arc<Stats>) -> Self {
        SessionManager {
            settings,
            sessions: Vec::new(),
            factory,
            stats,
        }
    }

    /// The session called `name`, or the most recent one.
    fn session(&mut self, name: &Option<String>) -> Result<&mut SessionDef, String> {
        match name {
            Some(name) => self
                .sessions
                .iter_mut()
                .find(|s| &s.name == name)
                .ok_or_else(|| format!("no session named {name:?}")),
            None => self
                .sessions
                .last_mut()
                .ok_or_else(|| "no session: create one first (ustrace create NAME)".to_string()),
        }
    }

    /// Sends the current definitions to the factory; resolves once it applied them.
    fn publish(&self) -> Request<BufferFactory, SessionsChanged> {
        self.factory.send(SessionsChanged(self.sessions.clone()))
    }

    /// Applies a request that needs no waiting on the factory.
    fn apply(&mut self, request: &ControlRequest) -> Result<ControlOk, String> {
        match request {
            ControlRequest::Create { name, output } => {
                check_name(name).map_err(|e| format!("session: {e}"))?;
                if self.sessions.iter().any(|s| &s.name == name) {
                    return Err(format!("session {name:?} already exists"));
                }
                let created = SystemTime::now();
                let output = match output {
                    Some(dir) => PathBuf::from(dir),
                    None => layout::session_dir(&self.settings.output_dir, name, created),
                };
                let message = format!("session {name} created, writing to {}", output.display());
                self.sessions.push(SessionDef {
                    name: name.clone(),
                    output: OutputDir::new(output),
                    created,
                    started: false,
                    ever_started: false,
                    channels: Vec::new(),
                });
                Ok(ControlOk::Done(message))
            }
            ControlRequest::EnableChannel { session, channel } => {
                let channel = &channel.resolve(&self.settings.default_channel);
                check_name(&channel.name).map_err(|e| format!("channel: {e}"))?;
                check_geometry(channel)?;
                if !self.settings.writers.contains(&channel.writer) {
                    return Err(format!(
                        "no writer named {:?} (registered: {})",
                        channel.writer,
                        self.settings.writers.join(", ")
                    ));
                }
                let s = self.session(session)?;
                if s.ever_started {
                    return Err(format!(
                        "session {} was started: channels are added before the first start",
                        s.name
                    ));
                }
                if s.channels.iter().any(|c| c.spec.name == channel.name) {
                    return Err(format!(
                        "channel {} already exists in session {}",
                        channel.name, s.name
                    ));
                }
                s.channels.push(ChannelDef {
                    spec: channel.clone(),
                    patterns: Vec::new(),
                });
                Ok(ControlOk::Done(format!(
                    "channel {} enabled in session {}",
                    channel.name, s.name
                )))
            }
            ControlRequest::EnableEvent {
                session,
                channel,
                pattern,
            } => {
                let pattern = EventPattern::parse(pattern).map_err(|e| e.to_string())?;
                let default_channel = self.settings.default_channel.clone();
                let s = self.session(session)?;
                let index = match channel {
                    Some(c) => s
                        .channels
                        .iter()
                        .position(|ch| &ch.spec.name == c)
                        .ok_or_else(|| format!("no channel {c:?} in session {}", s.name))?,
                    None if s.channels.len() == 1 => 0,
                    None if s.channels.is_empty() && !s.ever_started => {
                        s.channels.push(ChannelDef {
                            spec: default_channel,
                            patterns: Vec::new(),
                        });
                        0
                    }
                    None => {
                        return Err(format!(
                            "session {} has {} channels: name one with -c",
                            s.name,
                            s.channels.len()
                        ));
                    }
                };
                let ch = &mut s.channels[index];
                if !ch.patterns.contains(&pattern) {
                    ch.patterns.push(pattern.clone());
                }
                Ok(ControlOk::Done(format!(
                    "event {} enabled in {}/{}",
                    pattern.as_str(),
                    s.name,
                    ch.spec.name
                )))
            }
            ControlRequest::AddContext {
                session,
                channel,
                contexts,
            } => {
                if contexts.is_empty() {
                    return Err("add-context needs at least one context type (-t)".into());
                }
                let s = self.session(session)?;
                if s.ever_started {
                    return Err(format!(
                        "session {} was started: contexts are added before the first start",
                        s.name
                    ));
                }
                let chosen: Vec<&mut ChannelDef> = match channel {
                    Some(c) => vec![
                        s.channels
                            .iter_mut()
                            .find(|ch| &ch.spec.name == c)
                            .ok_or_else(|| format!("no channel {c:?} in session {}", s.name))?,
                    ],
                    None => s.channels.iter_mut().collect(),
                };
                if chosen.is_empty() {
                    return Err(format!(
                        "session {} has no channel: enable one before adding contexts",
                        s.name
                    ));
                }
                let mut names = Vec::new();
                for ch in chosen {
                    let mut all = ch.spec.contexts();
                    all.extend_from_slice(contexts);
                    ch.spec.contexts = Some(ContextSet::of(&all).to_vec());
                    names.push(ch.spec.name.clone());
                }
                let added: Vec<&str> = contexts.iter().map(|c| c.name()).collect();
                Ok(ControlOk::Done(format!(
                    "context {} added to {}/{}",
                    added.join(", "),
                    s.name,
                    names.join(", ")
                )))
            }
            ControlRequest::Start { session } => {
                let s = self.session(session)?;
                if s.started {
                    return Err(format!("session {} is already started", s.name));
                }
                if s.channels.is_empty() {
                    return Err(format!(
                        "session {} has no channel and no event enabled",
                        s.name
                    ));
                }
                s.started = true;
                s.ever_started = true;
                if s.channels
                    .iter()
                    .any(|c| c.spec.buffers == Buffering::PerPid)
                {
                    let dir = layout::pid_traces_dir(s.output.path());
                    if let Err(e) = spread::create_spread_dir(&s.output) {
                        log::warn!("session {}: cannot prepare {}: {e}", s.name, dir.display());
                    }
                }
                Ok(ControlOk::Done(format!(
                    "tracing started for session {}",
                    s.name
                )))
            }
            ControlRequest::List { session } => {
                let sessions: Vec<&SessionDef> = match session {
                    Some(_) => vec![&*self.session(session)?],
                    None => self.sessions.iter().collect(),
                };
                Ok(ControlOk::Sessions(
                    sessions
                        .into_iter()
                        .map(|s| SessionInfo {
                            name: s.name.clone(),
                            output: s.output.path().display().to_string(),
                            started: s.started,
                            channels: s
                                .channels
                                .iter()
                                .map(|c| {
                                    let patterns = c.patterns.iter().map(|p| p.as_str().to_owned());
                                    (c.spec.clone(), patterns.collect())
                                })
                                .collect(),
                        })
                        .collect(),
                ))
            }
            ControlRequest::Status => Ok(ControlOk::Status(self.stats.report())),
            // They wait for the factory: the handler answers them itself.
            ControlRequest::Stop { .. }
            | ControlRequest::Destroy { .. }
            | ControlRequest::ListApps => {
                Err("stop, destroy and list --apps are answered asynchronously".to_string())
            }
        }
    }
}

/// Checks a channel's geometry the same way the config file does.
fn check_geometry(spec: &ChannelSpec) -> Result<(), String> {
    spec.geometry()
        .validate()
        .map_err(|e| format!("channel {}: {e}", spec.name))
}

impl Actor for SessionManager {
    type Context = Context<Self>;
}

impl Handler<Control> for SessionManager {
    type Result = ResponseActFuture<Self, ControlReply>;

    fn handle(&mut self, Control(request): Control, _: &mut Context<Self>) -> Self::Result {
        match request {
            ControlRequest::Stop { session } => {
                let name = match self.session(&session) {
                    Ok(s) if s.started => {
                        s.started = false;
                        s.name.clone()
                    }
                    Ok(s) => return reply(Err(format!("session {} is not started", s.name))),
                    Err(e) => return reply(Err(e)),
                };
                let stop = self.factory.send(StopSession(name.clone()));
                let stats = self.stats.clone();
                Box::pin(
                    async move {
                        let flushed = stop.await.map_err(|e| e.to_string()).and_then(|r| r);
                        release_freed_heap();
                        let failed = failed_streams(&stats, &name);
                        match (flushed, failed) {
                            (Ok(()), None) => Ok(ControlOk::Done(format!(
                                "tracing stopped for session {name}; trace flushed"
                            ))),
                            (Err(e), _) => Err(format!("session {name} stopped, but: {e}")),
                            (Ok(()), Some(failed)) => Err(format!(
                                "session {name} stopped, but data was lost: {failed}"
                            )),
                        }
                    }
                    .into_actor(self),
                )
            }
            ControlRequest::ListApps => {
                let list = self.factory.send(ListApps);
                Box::pin(
                    async move {
                        list.await
                            .map(ControlOk::Apps)
                            .map_err(|e| format!("listing apps: {e}"))
                    }
                    .into_actor(self),
                )
            }
            ControlRequest::Destroy { session } => {
                let name = match self.session(&session) {
                    Ok(s) => s.name.clone(),
                    Err(e) => return reply(Err(e)),
                };
                self.sessions.retain(|s| s.name != name);
                let destroy = self.factory.send(DestroySession(name.clone()));
                Box::pin(
                    async move {
                        match destroy.await {
                            Ok(Ok(())) => Ok(ControlOk::Done(format!("session {name} destroyed"))),
                            Ok(Err(e)) => Err(format!("session {name} destroyed, but: {e}")),
                            Err(e) => Err(format!("session {name}: {e}")),
                        }
                    }
                    .into_actor(self),
                )
            }
            request => {
                let result = self.apply(&request);
                let changes = matches!(
                    request,
                    ControlRequest::Create { .. }
                        | ControlRequest::EnableChannel { .. }
                        | ControlRequest::EnableEvent { .. }
                        | ControlRequest::Start { .. }
                );
                if result.is_err() || !changes {
                    return reply(result);
                }
                // Answer once the factory has pushed buffers to the registered apps.
                let publish = self.publish();
                Box::pin(
                    async move {
                        publish.await.map_err(|e| e.to_string())?;
                        result
                    }
                    .into_actor(self),
                )
            }
        }
    }
}

/// The failed writers of `session`, for the answer to `stop`.
fn failed_streams(stats: &Stats, session: &str) -> Option<String> {
    let failures = stats.failed_writers.lock().ok()?;
    let prefix = format!("{session}/");
    let lines: Vec<String> = failures
        .iter()
        .filter(|f| f.stream.starts_with(&prefix))
        .map(|f| {
            format!(
                "writer {} failed ({}), {} packets lost",
                f.stream, f.error, f.packets_lost
            )
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// An immediate answer.
fn reply(result: ControlReply) -> ResponseActFuture<SessionManager, ControlReply> {
    Box::pin(fut::ready(result))
}
