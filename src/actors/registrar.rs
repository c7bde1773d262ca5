//! Registrar: the front door of `apps.sock`.
//!
//! It takes each accepted connection, reads the peer's pid and uid from SO_PEERCRED
//! (never from anything the peer says), gives the connection its [`ConnectionId`],
//! enforces the app limits (`limits.max_apps` for everyone, `limits.max_apps_per_uid`
//! for each user but the daemon's own, so that one uid holding idle connections never
//! shuts out another),
//! and starts one AppConnection actor per app. Its only per-app state is the count
//! of connections per uid, each given back by a [`UidSlot`] when its actor drops, so
//! 10,000 short-lived apps leave nothing here.

use crate::actors::app_connection::{self, AppConnection, AppLimits, ConnectionId, Refusal};
use crate::actors::buffer_factory::BufferFactory;
use crate::actors::stats::Stats;
use crate::protocol::peer;
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::UnixStream;

/// The actor.
pub struct Registrar {
    /// Where registrations get their buffers.
    factory: Addr<BufferFactory>,
    /// What each app connection is allowed.
    limits: AppLimits,
    /// Daemon counters (the app count is the global limit's measure).
    stats: Arc<Stats>,
    /// The id of the next accepted connection: a counter, so no id is ever reused.
    next_connection: u64,
    /// Connections per uid, the per-uid limit's measure.
    per_uid: UidConnections,
    /// The daemon's own uid: its apps are the operator's, bounded by `max_apps`
    /// only (a single-user daemon keeps every place).
    daemon_uid: u32,
}

impl Registrar {
    /// A registrar handing apps to `factory`.
    pub fn new(factory: Addr<BufferFactory>, limits: AppLimits, stats: Arc<Stats>) -> Self {
        Registrar {
            factory,
            limits,
            stats,
            next_connection: 1,
            per_uid: UidConnections::default(),
            daemon_uid: nix::unistd::geteuid().as_raw(),
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
        let uid = credentials.uid.as_raw();
        let admitted = if self.stats.apps.load(Relaxed) >= self.limits.max_apps {
            Err(Refusal::MaxApps {
                max: self.limits.max_apps,
            })
        } else if uid == self.daemon_uid {
            Ok(None)
        } else {
            self.per_uid
                .claim(uid, self.limits.max_apps_per_uid)
                .map(Some)
                .ok_or(Refusal::MaxAppsPerUid {
                    uid,
                    max: self.limits.max_apps_per_uid,
                })
        };
        let slot = match admitted {
            Ok(slot) => slot,
            Err(refusal) => {
                log::warn!(
                    "app {} (uid {uid}) refused: {refusal}",
                    credentials.pid.as_raw()
                );
                actix_rt::spawn(app_connection::refuse(stream, refusal, self.stats.clone()));
                return;
            }
        };
        let connection = ConnectionId(self.next_connection);
        self.next_connection += 1;
        AppConnection::start(
            stream,
            connection,
            credentials,
            slot,
            self.limits,
            self.factory.clone(),
            self.stats.clone(),
        );
    }
}

/// Live app connections per uid, shared by the Registrar (which claims) and the
/// AppRegistrations' [`UidSlot`]s (which give back). Only the actor thread touches
/// it; the mutex is never contended.
#[derive(Clone, Default)]
struct UidConnections(Arc<Mutex<HashMap<u32, u64>>>);

impl UidConnections {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, u64>> {
        // A counter map stays consistent whatever panicked while holding it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for one more connection of `uid`, unless it holds `max` already.
    fn claim(&self, uid: u32, max: u64) -> Option<UidSlot> {
        let mut counts = self.lock();
        let held = counts.entry(uid).or_insert(0);
        if *held >= max {
            return None;
        }
        *held += 1;
        Some(UidSlot {
            uid,
            connections: self.clone(),
        })
    }
}

/// One connection's place under `limits.max_apps_per_uid`, given back on drop
/// (the AppConnection holds it for its whole life, whatever ends it).
pub struct UidSlot {
    /// Whose place.
    uid: u32,
    /// Where it is counted.
    connections: UidConnections,
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut counts = self.connections.lock();
        if let Some(held) = counts.get_mut(&self.uid) {
            *held -= 1;
            if *held == 0 {
                counts.remove(&self.uid);
            }
        }
    }
}
