//! Registrar: the front door of `apps.sock`.
//!
//! It takes each accepted connection, reads the peer's pid and uid from SO_PEERCRED
//! (never from anything the peer says), enforces the app limit, and starts one
//! AppRegistration actor per app. It holds no per-app state: an app that exits is
//! forgotten by its own actor, so 10,000 short-lived apps leave nothing here.

use crate::actors::buffer_factory::BufferFactory;
use crate::actors::registration::{self, AppRegistration};
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
    /// Largest frame accepted from an app.
    max_frame: usize,
    /// Apps connected at once beyond which new ones are refused.
    max_apps: u64,
    /// Daemon counters (the app count is the limit's measure).
    stats: Arc<Stats>,
}

impl Registrar {
    /// A registrar handing apps to `factory`.
    pub fn new(
        factory: Addr<BufferFactory>,
        max_frame: usize,
        max_apps: u64,
        stats: Arc<Stats>,
    ) -> Self {
        Registrar {
            factory,
            max_frame,
            max_apps,
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
        if self.stats.apps.load(Relaxed) >= self.max_apps {
            log::warn!(
                "app {} (uid {}) refused: limits.max_apps ({}) reached",
                credentials.pid,
                credentials.uid,
                self.max_apps
            );
            actix_rt::spawn(registration::refuse(
                stream,
                format!("the daemon traces at most {} apps at once", self.max_apps),
            ));
            return;
        }
        AppRegistration::start(
            stream,
            credentials.pid.as_raw(),
            credentials.uid.as_raw(),
            self.max_frame,
            self.factory.clone(),
            self.stats.clone(),
        );
    }
}
