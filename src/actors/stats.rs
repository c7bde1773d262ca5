//! Daemon-wide counters behind `ustrace status`.
//!
//! Every actor holds an `Arc<Stats>` and bumps the counters it owns; `status` reads
//! a snapshot. Plain atomics rather than a counting actor: a status request must not
//! queue behind a busy actor, and no counter needs to be consistent with another.

use crate::actors::app_connection::Refusal;
use crate::protocol::messages::{SessionRotation, StatusReport, UidLosses, WriterFailure};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The live counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Apps connected now.
    pub apps: AtomicU64,
    /// Apps that registered since start.
    pub apps_total: AtomicU64,
    /// Live BufferSet actors.
    pub buffer_sets: AtomicU64,
    /// Live Writer actors.
    pub writers: AtomicU64,
    /// Per-PID ring sets made ahead and not taken yet (see `ring_pool`).
    pub pid_sets_ready: AtomicU64,
    /// How many the ring pool keeps ready, over every geometry in use.
    pub pid_sets_wanted: AtomicU64,
    /// Writer restarts.
    pub writer_restarts: AtomicU64,
    /// Events dropped on full rings.
    pub events_discarded: AtomicU64,
    /// Packets overwritten in overwrite mode.
    pub packets_overwritten: AtomicU64,
    /// Events lost to producers that died mid-event.
    pub events_lost_dead_producer: AtomicU64,
    /// Reservations made without a holder record (see `RingCounters`).
    pub unrecorded_reservations: AtomicU64,
    /// Packets that failed writers could not store.
    pub packets_lost_writer: AtomicU64,
    /// Rings marked corrupt.
    pub corrupt_rings: AtomicU64,
    /// Sub-buffers dropped with corrupt rings.
    pub packets_lost_corrupt_ring: AtomicU64,
    /// Connections made to lttng-relayds (more than one per session: reconnections).
    pub relayd_connects: AtomicU64,
    /// Packets a broken relayd link could not send (retried, or counted lost).
    pub relayd_send_failures: AtomicU64,
    /// Ring losses by owning uid (see [`Stats::count_ring_losses`]).
    pub per_uid: Mutex<BTreeMap<u32, UidLosses>>,
    /// Writers that exhausted their restart budget.
    pub failed_writers: Mutex<Vec<WriterFailure>>,
    /// Registration service times, by power-of-two microseconds (see
    /// `StatusReport::registration_service_us`).
    pub registration_service: [AtomicU64; SERVICE_BUCKETS],
    /// Apps refused since start, by [`Refusal::cause`]: an operator sees which limit
    /// turns apps away.
    pub refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// Sessions' rotation settings and last archives, written by the factory.
    pub rotations: Mutex<BTreeMap<String, SessionRotation>>,
}

/// Buckets of the service-time histogram: up to 2^24 us (16 s), past any timeout.
const SERVICE_BUCKETS: usize = 24;

impl Stats {
    /// Adds `n` to `counter`, saturating: some counts come from rings an app can
    /// write, and a total must stick at its maximum rather than wrap to nothing.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            let _ = counter.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_add(n)));
        }
    }

    /// Adds the (checked) losses of a ring owned by `uid` to the daemon's totals and
    /// to that uid's own: `losses.uid` is ignored.
    pub fn count_ring_losses(&self, uid: u32, losses: &UidLosses) {
        if *losses == UidLosses::default() {
            return;
        }
        Stats::add(&self.events_discarded, losses.events_discarded);
        Stats::add(&self.packets_overwritten, losses.packets_overwritten);
        Stats::add(
            &self.events_lost_dead_producer,
            losses.events_lost_dead_producer,
        );
        Stats::add(&self.corrupt_rings, losses.corrupt_rings);
        Stats::add(
            &self.packets_lost_corrupt_ring,
            losses.packets_lost_corrupt_ring,
        );
        let Ok(mut per_uid) = self.per_uid.lock() else {
            return;
        };
        let owner = per_uid.entry(uid).or_insert_with(|| UidLosses {
            uid,
            ..UidLosses::default()
        });
        let sum = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        sum(&mut owner.events_discarded, losses.events_discarded);
        sum(&mut owner.packets_overwritten, losses.packets_overwritten);
        sum(
            &mut owner.events_lost_dead_producer,
            losses.events_lost_dead_producer,
        );
        sum(&mut owner.corrupt_rings, losses.corrupt_rings);
        sum(
            &mut owner.packets_lost_corrupt_ring,
            losses.packets_lost_corrupt_ring,
        );
    }

    /// Takes one from `counter`.
    pub fn sub(counter: &AtomicU64) {
        counter.fetch_sub(1, Relaxed);
    }

    /// Counts one registration that took `took` from accept to RegistrationDone.
    pub fn registration_served(&self, took: Duration) {
        let us = took.as_micros().max(1) as u64;
        let bucket = (63 - us.leading_zeros() as usize).min(SERVICE_BUCKETS - 1);
        self.registration_service[bucket].fetch_add(1, Relaxed);
    }

    /// Counts one app refused for `refusal`.
    pub fn refused(&self, refusal: &Refusal) {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        *refusals.entry(refusal.cause()).or_insert(0) += 1;
    }

    /// A copy of every counter for `ustrace status`.
    pub fn report(&self) -> StatusReport {
        let clock = crate::shm::host_clock().ok();
        StatusReport {
            apps: self.apps.load(Relaxed),
            apps_total: self.apps_total.load(Relaxed),
            buffer_sets: self.buffer_sets.load(Relaxed),
            writers: self.writers.load(Relaxed),
            pid_sets_ready: self.pid_sets_ready.load(Relaxed),
            pid_sets_wanted: self.pid_sets_wanted.load(Relaxed),
            writer_restarts: self.writer_restarts.load(Relaxed),
            events_discarded: self.events_discarded.load(Relaxed),
            packets_overwritten: self.packets_overwritten.load(Relaxed),
            events_lost_dead_producer: self.events_lost_dead_producer.load(Relaxed),
            unrecorded_reservations: self.unrecorded_reservations.load(Relaxed),
            packets_lost_writer: self.packets_lost_writer.load(Relaxed),
            corrupt_rings: self.corrupt_rings.load(Relaxed),
            packets_lost_corrupt_ring: self.packets_lost_corrupt_ring.load(Relaxed),
            relayd_connects: self.relayd_connects.load(Relaxed),
            // The daemon started only once its clock was chosen: this never fails.
            clock: clock.map_or("unusable", |c| c.name()).into(),
            clock_tsc_hz: clock.and_then(|c| c.tsc_hz()).unwrap_or(0),
            relayd_send_failures: self.relayd_send_failures.load(Relaxed),
            per_uid: self
                .per_uid
                .lock()
                .map(|p| p.values().cloned().collect())
                .unwrap_or_default(),
            failed_writers: self
                .failed_writers
                .lock()
                .map(|f| f.clone())
                .unwrap_or_default(),
            registration_service_us: self
                .registration_service
                .iter()
                .map(|n| n.load(Relaxed))
                .collect(),
            refusals: self
                .refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(cause, n)| (cause.to_string(), *n))
                .collect(),
            rotations: self
                .rotations
                .lock()
                .map(|r| r.values().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::StatusReport;

    #[test]
    fn service_times_land_in_power_of_two_buckets_and_give_percentiles() {
        let stats = Stats::default();
        for us in [1, 3, 3, 3, 100, 100, 100, 100, 100, 5000] {
            stats.registration_served(Duration::from_micros(us));
        }
        let counts = stats.report().registration_service_us;
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 3);
        assert_eq!(counts[6], 5);
        assert_eq!(counts[12], 1);
        let none = vec![0; counts.len()];
        assert_eq!(
            StatusReport::service_percentile(&counts, &none, 0.5),
            Some(128)
        );
        assert_eq!(
            StatusReport::service_percentile(&counts, &none, 0.99),
            Some(8192)
        );
        assert_eq!(StatusReport::service_percentile(&none, &none, 0.5), None);
    }
}
