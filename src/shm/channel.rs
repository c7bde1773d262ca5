//! The per-CPU ring set of one channel and the eventfd that wakes its consumer.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::ring::BlankRing;
use super::{Consumer, Geometry, Ring, RingConfig, ShmError, current_cpu};

/// An eventfd shared by the producers of a ring set and its consumer: producers add
/// one per completed sub-buffer, the consumer polls it (and also runs on a timer).
pub struct Wakeup {
    /// The eventfd, non-blocking.
    fd: OwnedFd,
}

impl Wakeup {
    /// A new non-blocking eventfd.
    pub fn new() -> Result<Wakeup, ShmError> {
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(ShmError::sys("eventfd"))?;
        Ok(Wakeup { fd: fd.into() })
    }

    /// Wraps an eventfd received from the daemon.
    pub fn from_fd(fd: OwnedFd) -> Wakeup {
        Wakeup { fd }
    }

    /// Wakes the consumer. Never blocks; a saturated counter already means "wake".
    pub fn signal(&self) {
        let _ = nix::unistd::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Takes the pending wake-ups (0 if none) without blocking.
    pub fn take(&self) -> Result<u64, ShmError> {
        let mut buf = [0u8; 8];
        match nix::unistd::read(&self.fd, &mut buf) {
            Ok(_) => Ok(u64::from_ne_bytes(buf)),
            Err(Errno::EAGAIN) => Ok(0),
            Err(e) => Err(ShmError::Sys {
                what: "reading the wake-up eventfd",
                source: e,
            }),
        }
    }
}

impl AsFd for Wakeup {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The rings of one channel for one owner (a uid or a pid), one per CPU, and their
/// shared wake-up. Producers pick the ring of the CPU they run on. Cloning shares
/// the same mappings.
#[derive(Clone)]
pub struct ChannelBuffers {
    /// Ring `i` serves CPU `i` (modulo the count).
    rings: Vec<Arc<Ring>>,
    /// Signalled by every ring of the set.
    wakeup: Arc<Wakeup>,
}

/// Number of possible CPUs: the size of a per-CPU ring set.
pub fn cpu_count() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_CONF)
        .ok()
        .flatten()
        .map_or(1, |n| n.max(1) as usize)
}

/// The rings of a channel and their eventfd made ahead of need, headers not
/// written: [`BlankSet::init`] turns them into [`ChannelBuffers`] with a few stores,
/// so that a daemon keeping some ready spares registration the system calls.
pub struct BlankSet {
    /// One per CPU.
    rings: Vec<BlankRing>,
    /// Their shared wake-up.
    wakeup: Wakeup,
    /// The geometry every ring is sized for.
    geometry: Geometry,
}

impl BlankSet {
    /// `cpus` blank rings named `<name>_<cpu>` sized for `geometry`, and one eventfd.
    pub fn create(name: &str, geometry: Geometry, cpus: usize) -> Result<BlankSet, ShmError> {
        let wakeup = Wakeup::new()?;
        let rings = (0..cpus.max(1))
            .map(|cpu| BlankRing::create(&format!("{name}_{cpu}"), geometry))
            .collect::<Result<_, _>>()?;
        Ok(BlankSet {
            rings,
            wakeup,
            geometry,
        })
    }

    /// The geometry its rings are sized for.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Writes every ring's header for `config` (whose geometry must be this set's).
    pub fn init(self, config: &RingConfig) -> Result<ChannelBuffers, ShmError> {
        let wakeup = Arc::new(self.wakeup);
        let rings = self
            .rings
            .into_iter()
            .enumerate()
            .map(|(cpu, blank)| Ring::init(blank, config, cpu as u32, wakeup.clone()).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(ChannelBuffers { rings, wakeup })
    }
}

impl ChannelBuffers {
    /// Creates `cpus` rings named `<name>_<cpu>` and one eventfd.
    pub fn create(
        name: &str,
        config: &RingConfig,
        cpus: usize,
    ) -> Result<ChannelBuffers, ShmError> {
        BlankSet::create(name, config.geometry, cpus)?.init(config)
    }

    /// Maps rings received from the daemon, in CPU order, with their eventfd; their
    /// events carry `context_len` bytes of event context (see [`Ring::from_fd`]).
    pub fn from_fds(
        rings: Vec<OwnedFd>,
        wakeup: OwnedFd,
        context_len: usize,
    ) -> Result<ChannelBuffers, ShmError> {
        if rings.is_empty() {
            return Err(ShmError::NoRings);
        }
        let wakeup = Arc::new(Wakeup::from_fd(wakeup));
        let rings = rings
            .into_iter()
            .map(|fd| Ring::from_fd(fd, wakeup.clone(), context_len).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(ChannelBuffers { rings, wakeup })
    }

    /// The ring of the CPU this thread runs on.
    #[inline]
    pub fn current(&self) -> &Ring {
        let cpu = current_cpu();
        // Sets normally have a ring per CPU: skip the division then.
        let i = if cpu < self.rings.len() {
            cpu
        } else {
            cpu % self.rings.len()
        };
        &self.rings[i]
    }

    /// All rings, in CPU order.
    pub fn rings(&self) -> &[Arc<Ring>] {
        &self.rings
    }

    /// The eventfd to poll (consumer) or to send to apps (daemon).
    pub fn wakeup(&self) -> &Wakeup {
        &self.wakeup
    }

    /// One consumer per ring, in CPU order (daemon side; create them once).
    pub fn consumers(&self) -> Vec<Consumer> {
        self.rings.iter().cloned().map(Consumer::new).collect()
    }
}
