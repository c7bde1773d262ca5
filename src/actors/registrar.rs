//! Registrar: the front door of `apps.sock`.
//!
//! It takes each accepted connection, reads the peer's pid and uid from SO_PEERCRED
//! (never from anything the peer says), enforces the app limit, and starts one
//! AppRegistration actor per app. It holds no per-app state: an app that exits is
//! forgotten by its own actor, so 10,000 short-lived apps leave nothing here.

use crate::actors::buffer_factory::BufferFactory;
use crate::actors::registration::{self, AppLimits, AppRegistration};
use crate::actors::stats::Stats;
use crate::protocol::peer;
use actix::prelude::*;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::net::UnixStream;

/// The actor.
pub struct Registrar {
    /// Where registrations get their buffers.
    factory: Addr<BufferFactory>,
    /// What each app connection is allowed.
    limits: AppLimits,
    /// Daemon counters (the app count is the limit's measure).
    stats: Arc<Stats>,
}

impl Registrar {
    /// A registrar handing apps to `factory`.
    pub fn new(factory: Addr<BufferFactory>, limits: AppLimits, stats: Arc<Stats>) -> Self {
        Registrar {
            factory,
            limits,
            stats,
        }
    }
}

impl Actor for Registrar {
    type Context = Context<Self>;
}

/// A connection accepted on `apps.sock`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Accept(pub UnixStream);

impl Handler<Accept> for Registrar {
    type Result = ();

    fn handle(&mut self, Accept(stream): Accept, _: &mut Context<Self>) {
        let credentials = match peer::credentials(&stream) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("apps.sock: peer credentials unavailable ({e}); connection closed");
                return;
            }
        };
        if self.stats.apps.load(Relaxed) >= self.limits.max_apps {
            log::warn!(
                "app {} (uid {}) refused: limits.max_apps ({}) reached",
                credentials.pid,
                credentials.uid,
                self.limits.max_apps
            );
            actix_rt::spawn(registration::refuse(
                stream,
                format!(
                    "the daemon traces at most {} apps at once",
                    self.limits.max_apps
                ),
            ));
            return;
        }
        AppRegistration::start(
            stream,
            credentials.pid.as_raw(),
            credentials.uid.as_raw(),
            self.limits,
            self.factory.clone(),
            self.stats.clone(),
        );
    }
}
