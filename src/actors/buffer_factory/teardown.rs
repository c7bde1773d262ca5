//! What happens when an app dies: the whole path, in the order it runs.
//!
//! 1. The kernel closes the app's socket whether it exited, crashed or was
//!    SIGKILLed. Its AppConnection's reader (`app_connection::read_frames`) sees
//!    EOF (or a protocol error, [`ConnectionError`](crate::actors::app_connection::ConnectionError)),
//!    the AppConnection sends [`AppGone`] here and stops. A process can also die
//!    while another keeps its socket open: it then lives on as that connection,
//!    and a later process with the same pid is another connection, with its own
//!    buffers (apps are known by [`ConnectionId`], never by pid).
//! 2. `BufferFactory::forget_app` forgets the app (an app refused at registration
//!    for an event limit is forgotten the same way: it never received its rings).
//!    Its per-PID traces are dropped from the factory and its per-PID sets are
//!    torn down (`BufferFactory::tear_down`): each set gets [`Teardown`], which
//!    flushes every ring (partial sub-buffers too), turns a reservation the app
//!    died inside into one lost event (the holder records say where,
//!    docs/shm.md), drains everything, waits for its writers to sync and stops;
//!    dropping it unmaps the rings and closes the memfds. The per-PID memory it
//!    held goes back to the budget at once. In a snapshot session they are kept
//!    instead, for the next snapshot (`snapshot.rs`), a bounded number of apps.
//! 3. Every per-UID set the app wrote to gets [`ProducerDied`] with the pids of its
//!    uid's connections still open: the set fills and commits, as lost events, the
//!    reservations whose holder is not live, so their packets complete with the
//!    live apps' events and the rings move on; a live holder, even a stopped one,
//!    is waited for. Only what the records do not explain falls back to the set's
//!    1-second give-up timer (`buffer_set.rs`).
//! 4. Teardowns run in the dead app's own BufferSet actors: no other app's
//!    registration waits for them. `stop` and `destroy` of their session do: they
//!    answer only once every teardown of the session in flight has finished
//!    (`BufferFactory::teardowns_finished`), so a dead app's events are on disk
//!    when the CLI hears "trace flushed".

use super::{BufferFactory, Owner, SetKey};
use crate::actors::app_connection::ConnectionId;
use crate::actors::buffer_set::{ProducerDied, Teardown};
use actix::prelude::*;
use tokio::sync::oneshot;

/// An app's connection closed: it exited, crashed or was killed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AppGone {
    /// Its connection.
    pub connection: ConnectionId,
}

impl Handler<AppGone> for BufferFactory {
    type Result = ();

    fn handle(&mut self, msg: AppGone, ctx: &mut Context<Self>) {
        self.forget_app(msg.connection, ctx);
    }
}

impl BufferFactory {
    /// Forgets app `connection`: tears its per-PID sets down and tells the per-UID
    /// sets it wrote to that one of their producers is gone.
    pub(super) fn forget_app(&mut self, connection: ConnectionId, ctx: &mut Context<Self>) {
        let Some(app) = self.apps.remove(&connection) else {
            return;
        };
        self.forget_pid_sets(connection, ctx);
        for key in app.channels.keys() {
            if let (&Owner::Uid(uid), Some(set)) = (&key.owner, self.sets.get(key)) {
                let live = self
                    .apps
                    .values()
                    .filter(|a| a.uid == uid)
                    .map(|a| a.pid)
                    .collect();
                set.addr.do_send(ProducerDied {
                    pid: app.pid,
                    uid,
                    live,
                });
            }
        }
    }

    /// Removes the sets matching `pred` and tears them down in their own actors;
    /// `stop` and `destroy` of their session wait for them.
    pub(super) fn tear_down(&mut self, pred: impl Fn(&SetKey) -> bool, ctx: &mut Context<Self>) {
        let keys: Vec<SetKey> = self.sets.keys().filter(|k| pred(k)).cloned().collect();
        for key in keys {
            let Some(set) = self.sets.remove(&key) else {
                continue;
            };
            if key.owner.is_pid() {
                self.pid_budget.give_back(set.uid, set.bytes);
            }
            self.teardowns
                .entry(key.session.clone())
                .or_default()
                .running += 1;
            ctx.spawn(
                set.addr
                    .send(Teardown)
                    .into_actor(self)
                    .map(move |result, act, _| {
                        match result {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => log::error!("teardown of {key:?}: {e}"),
                            Err(e) => log::error!("teardown of {key:?}: {e}"),
                        }
                        act.teardown_done(&key.session);
                    }),
            );
        }
    }

    /// Counts a finished teardown and wakes the waiters of its session's last one.
    fn teardown_done(&mut self, session: &str) {
        let Some(t) = self.teardowns.get_mut(session) else {
            return;
        };
        t.running -= 1;
        if t.running == 0 {
            for waiter in self
                .teardowns
                .remove(session)
                .into_iter()
                .flat_map(|t| t.waiters)
            {
                let _ = waiter.send(());
            }
        }
    }

    /// Resolves once `session` has no teardown in flight.
    pub(super) fn teardowns_finished(
        &mut self,
        session: &str,
    ) -> impl Future<Output = ()> + 'static {
        let waiter = self.teardowns.get_mut(session).map(|t| {
            let (tx, rx) = oneshot::channel();
            t.waiters.push(tx);
            rx
        });
        async move {
            if let Some(rx) = waiter {
                let _ = rx.await;
            }
        }
    }
}

/// The teardowns of one session that have not finished.
#[derive(Default)]
pub(super) struct Teardowns {
    /// How many.
    running: usize,
    /// Resolved when `running` drops to zero.
    waiters: Vec<oneshot::Sender<()>>,
}
