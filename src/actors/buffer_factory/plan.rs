//! The factory's decisions, apart from the making: which BufferSet an app's channel
//! uses, which of its events a channel enables, whether a per-PID set fits the
//! memory caps, and whether a refusal is reported. Plain data and functions, so
//! each rule is tested here without memfds, actors or a daemon; the actor
//! ([`super::BufferFactory`]) only sequences them with the effects.

use crate::actors::app_connection::Refusal;
use crate::actors::session::ChannelDef;
use crate::ctf::field::EventDesc;
use crate::filter::Program;
use crate::protocol::messages::ChannelSpec;
use crate::trace::owner::Owner;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Identifies a BufferSet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetKey {
    /// Session name.
    pub session: String,
    /// Channel name.
    pub channel: String,
    /// Owner.
    pub owner: Owner,
}

/// Indices (into the app's events) of the events `channel` enables: an app with
/// none gets no buffer of the channel at all.
pub fn matching_events(events: &[EventDesc], channel: &ChannelDef) -> Vec<u32> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| channel.matches(e))
        .map(|(i, _)| i as u32)
        .collect()
}

/// Shared-memory bytes of one set of `spec` with one ring per CPU of `cpus`.
pub fn set_bytes(spec: &ChannelSpec, cpus: usize) -> u64 {
    u64::from(spec.subbuf_size) * u64::from(spec.num_subbuf) * cpus as u64
}

/// The per-PID memory caps and what is held against them: for all apps together
/// (`limits.max_pid_buffer_bytes`) and for each uid (`..._per_uid`), the daemon's
/// own uid bounded by the global cap only (its apps are the operator's).
#[derive(Debug)]
pub struct PidBudget {
    /// Cap on all per-PID sets together.
    max: u64,
    /// Cap on the per-PID sets of one uid.
    max_per_uid: u64,
    /// The uid the per-uid cap does not apply to.
    daemon_uid: u32,
    /// Held now by all.
    held: u64,
    /// Held now by uid (uids holding none are absent).
    held_by_uid: HashMap<u32, u64>,
}

impl PidBudget {
    /// An empty budget with these caps.
    pub fn new(max: u64, max_per_uid: u64, daemon_uid: u32) -> PidBudget {
        PidBudget {
            max,
            max_per_uid,
            daemon_uid,
            held: 0,
            held_by_uid: HashMap::new(),
        }
    }

    /// Whether a new per-PID set of `bytes` for `uid` fits under both caps; the
    /// refusal names the cap it breaks.
    pub fn check(&self, uid: u32, bytes: u64) -> Result<(), Refusal> {
        if self.held + bytes > self.max {
            return Err(Refusal::PidBufferBytes { max: self.max });
        }
        if uid == self.daemon_uid {
            return Ok(());
        }
        let held = self.held_by_uid.get(&uid).copied().unwrap_or(0);
        if held + bytes > self.max_per_uid {
            return Err(Refusal::PidBufferBytesPerUid {
                uid,
                max: self.max_per_uid,
            });
        }
        Ok(())
    }

    /// Counts a set of `bytes` made for `uid`.
    pub fn take(&mut self, uid: u32, bytes: u64) {
        self.held += bytes;
        *self.held_by_uid.entry(uid).or_insert(0) += bytes;
    }

    /// Gives back a set of `bytes` of `uid` that is torn down.
    pub fn give_back(&mut self, uid: u32, bytes: u64) {
        self.held -= bytes;
        if let Some(held) = self.held_by_uid.get_mut(&uid) {
            *held -= bytes;
            if *held == 0 {
                self.held_by_uid.remove(&uid);
            }
        }
    }
}

/// What to do with a per-PID set the budget decided on, for one app.
#[derive(Debug, PartialEq, Eq)]
pub enum BudgetVerdict {
    /// Make (or use) the set.
    Grant,
    /// Refuse it and count the refusal: the first time for this app and set.
    Refuse(Refusal),
    /// Refuse it silently: already counted for this app and set.
    AlreadyRefused,
}

/// Applies `budget` (the budget's answer for `key`) to an app that was refused the
/// sets in `refused` before: each refusal is counted once, however often a later
/// session change tries the set again; a set granted later may be refused (and
/// counted) again afterwards.
pub fn budget_verdict(
    refused: &mut BTreeSet<SetKey>,
    key: &SetKey,
    budget: Result<(), Refusal>,
) -> BudgetVerdict {
    match budget {
        Ok(()) => {
            refused.remove(key);
            BudgetVerdict::Grant
        }
        Err(refusal) if refused.insert(key.clone()) => BudgetVerdict::Refuse(refusal),
        Err(_) => BudgetVerdict::AlreadyRefused,
    }
}

/// The events enabled in a channel given to an app (`enabled`) that `matching` no
/// longer has (`disable-event`, `disable-channel`): what a revocation carries,
/// ascending.
pub fn to_disable(matching: &[u32], enabled: &HashSet<u32>) -> Vec<u32> {
    let mut gone: Vec<u32> = enabled
        .iter()
        .copied()
        .filter(|i| !matching.contains(i))
        .collect();
    gone.sort_unstable();
    gone
}

/// The events of `matching` not enabled yet in a channel given to an app
/// (`enabled`): what a grant carries, in the app's order.
pub fn to_enable<'a>(
    matching: &'a [u32],
    enabled: &'a HashSet<u32>,
) -> impl Iterator<Item = u32> + 'a {
    matching.iter().copied().filter(|i| !enabled.contains(i))
}

/// The events of `matching` enabled already whose filter is not the one sent
/// (`sent`) any more (`wanted`: a rule added, with or without a filter): enabled
/// again with the new one, in the app's order.
pub fn refiltered<'a>(
    matching: &'a [u32],
    enabled: &'a HashSet<u32>,
    sent: &'a HashMap<u32, Program>,
    wanted: &'a HashMap<u32, Program>,
) -> impl Iterator<Item = u32> + 'a {
    matching
        .iter()
        .copied()
        .filter(|i| enabled.contains(i) && sent.get(i) != wanted.get(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::app_connection::ConnectionId;
    use crate::ctf::field::LogLevel;
    use crate::protocol::messages::Buffering;
    use crate::rule::{EventPattern, EventRule};
    use crate::shm::Mode;
    use crate::trace::owner::Process;
    use std::time::UNIX_EPOCH;

    fn spec(buffers: Buffering) -> ChannelSpec {
        ChannelSpec {
            name: "ch".into(),
            buffers,
            subbuf_size: 4096,
            num_subbuf: 4,
            mode: Mode::Discard,
            writer: "ctf".into(),
            contexts: None,
            tracefile: Default::default(),
        }
    }

    fn event(provider: &str, name: &str) -> EventDesc {
        EventDesc {
            model_emf_uri: None,
            provider: provider.into(),
            name: name.into(),
            loglevel: LogLevel::Info,
            fields: Vec::new(),
        }
    }

    fn key(owner: Owner) -> SetKey {
        SetKey {
            session: "s".into(),
            channel: "ch".into(),
            owner,
        }
    }

    #[test]
    fn a_channel_enables_the_events_its_patterns_match_in_the_apps_order() {
        let mut channel = ChannelDef::new(spec(Buffering::PerUid));
        channel.rules = vec![EventRule::all(EventPattern::parse("app:*").unwrap())];
        let events = [event("app", "a"), event("lib", "b"), event("app", "c")];
        assert_eq!(matching_events(&events, &channel), vec![0, 2]);
        let none = ChannelDef::new(spec(Buffering::PerUid));
        assert!(matching_events(&events, &none).is_empty());
        channel.enabled = false;
        assert!(matching_events(&events, &channel).is_empty());
    }

    #[test]
    fn an_event_several_rules_match_is_enabled_once() {
        let rule = |p: &str| EventRule::all(EventPattern::parse(p).unwrap());
        let mut channel = ChannelDef::new(spec(Buffering::PerUid));
        channel.rules = vec![rule("app:*"), rule("*a"), rule("app:a")];
        let events = [event("app", "a"), event("lib", "b"), event("app", "c")];
        assert_eq!(matching_events(&events, &channel), vec![0, 2]);
    }

    #[test]
    fn a_grant_carries_only_the_events_not_enabled_yet() {
        let enabled: HashSet<u32> = [0, 3].into_iter().collect();
        let missing: Vec<u32> = to_enable(&[0, 2, 3, 5], &enabled).collect();
        assert_eq!(missing, vec![2, 5]);
    }

    #[test]
    fn a_revocation_carries_the_enabled_events_no_longer_matching() {
        let enabled: HashSet<u32> = [0, 2, 3].into_iter().collect();
        assert_eq!(to_disable(&[2, 5], &enabled), vec![0, 3]);
        assert!(to_disable(&[0, 2, 3], &enabled).is_empty());
    }

    #[test]
    fn a_set_has_one_ring_per_cpu() {
        assert_eq!(set_bytes(&spec(Buffering::PerPid), 3), 4096 * 4 * 3);
    }

    #[test]
    fn the_global_cap_bounds_every_uid_and_the_per_uid_cap_all_but_the_daemons() {
        let mut budget = PidBudget::new(100, 40, 0);
        assert_eq!(budget.check(1000, 40), Ok(()));
        assert_eq!(
            budget.check(1000, 41),
            Err(Refusal::PidBufferBytesPerUid { uid: 1000, max: 40 })
        );
        budget.take(1000, 40);
        assert_eq!(
            budget.check(1000, 1),
            Err(Refusal::PidBufferBytesPerUid { uid: 1000, max: 40 })
        );
        // Another uid has its own share; the daemon's uid only the global cap.
        assert_eq!(budget.check(1001, 40), Ok(()));
        assert_eq!(budget.check(0, 60), Ok(()));
        assert_eq!(
            budget.check(0, 61),
            Err(Refusal::PidBufferBytes { max: 100 })
        );
        budget.give_back(1000, 40);
        assert_eq!(budget.check(0, 100), Ok(()));
        assert_eq!(budget.check(1000, 40), Ok(()));
    }

    #[test]
    fn a_refusal_is_counted_once_per_app_and_set_until_it_is_granted() {
        let mut refused = BTreeSet::new();
        let k = key(Owner::Pid {
            connection: ConnectionId(1),
            process: Process::of("app", 1, UNIX_EPOCH),
        });
        let no = || Err(Refusal::PidBufferBytes { max: 1 });
        assert_eq!(
            budget_verdict(&mut refused, &k, no()),
            BudgetVerdict::Refuse(Refusal::PidBufferBytes { max: 1 })
        );
        assert_eq!(
            budget_verdict(&mut refused, &k, no()),
            BudgetVerdict::AlreadyRefused
        );
        assert_eq!(
            budget_verdict(&mut refused, &k, Ok(())),
            BudgetVerdict::Grant
        );
        assert!(matches!(
            budget_verdict(&mut refused, &k, no()),
            BudgetVerdict::Refuse(_)
        ));
    }
}
