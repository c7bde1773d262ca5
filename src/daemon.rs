//! The session daemon: sockets, actors, sessions from the config file, shutdown.
//!
//! [`Daemon::run`] binds `control.sock` (mode 0600: only the daemon's own user
//! controls it; 0660 owner:group with a control group, see
//! [`crate::service::access`]) and `apps.sock` (mode 0666: apps of every user
//! register; each gets only its own uid's buffers) under the runtime directory,
//! starts the actors, creates the sessions the config file declares, tells the
//! service manager it is ready (`READY=1` on `$NOTIFY_SOCKET`, once both sockets
//! listen), and serves until SIGINT or SIGTERM, when it stops every started session
//! (flushing it to disk) before exiting. SIGHUP reloads the config file (see
//! [`Daemon::reload_from`]). Each socket appears with its final mode and group,
//! never wider for an instant (see `bind` below).
//!
//! Concurrency: everything runs on one actix system thread except the writers, which
//! run on I/O arbiters (one thread per CPU, each set's writers on one of them in
//! turn) so that disk I/O never delays a registration.

use crate::actors::app_connection::AppLimits;
use crate::actors::buffer_factory::{BufferFactory, FactorySettings, SetRestartPolicy};
use crate::actors::control_socket;
use crate::actors::framed::{self, FrameError};
use crate::actors::registrar::{Accept, Registrar};
use crate::actors::session::{
    CreateSession, DisableChannel, Done, EnableChannel, EnableEvent, EnableRotation, ListSessions,
    SessionError, SessionManager, SessionSettings, StartSession, StopSession,
};
use crate::actors::stats::Stats;
use crate::actors::supervision::RestartPolicy;
use crate::actors::writer::{WriterCatalog, WriterFactory};
use crate::config::{Config, SessionConfig, SupervisionConfig};
use crate::protocol::messages::{ControlRequest, RotationSchedule};
use crate::protocol::{APPS_SOCKET, CONTROL_SOCKET};
use crate::relayd::{RELAYD_WRITER, RelaydWriterFactory};
use crate::service::ConfigSource;
use crate::service::access::ControlAccess;
use crate::service::notify;
use crate::shm::cpu_count;
use actix::prelude::*;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The runtime directory could not be found or prepared.
    #[error("runtime directory {path}: {source}")]
    RuntimeDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("a daemon already serves {0}; stop it or set USTRACE_RUNDIR to another directory")]
    AlreadyRunning(PathBuf),
    /// A socket could not be bound.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// No runtime or output directory could be determined.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A session declared in the config file was refused.
    #[error("config session {session}: {source}")]
    ConfigSession {
        /// The session's name.
        session: String,
        /// Why.
        source: SessionError,
    },
    /// The actor system failed.
    #[error("actor system: {0}")]
    System(io::Error),
    /// The trace clock asked for (`USTRACE_CLOCK`) cannot be used on this host.
    #[error(transparent)]
    Clock(#[from] crate::shm::ClockError),
}

/// Why a reload (SIGHUP) changed nothing: the daemon keeps the config it runs.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The daemon was not started from a file.
    #[error("no config file to reload (the daemon was started with an in-memory config)")]
    NoFile,
    /// The file is missing or invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The buffer factory did not take the new limits.
    #[error("buffer factory: {0}")]
    Actor(String),
}

/// A daemon to run: the config plus the writers developers registered.
pub struct Daemon {
    /// The deployment.
    config: Config,
    /// Writers by name; the built-in `ctf` one is always there.
    writers: WriterCatalog,
    /// Who may use `control.sock`.
    access: ControlAccess,
    /// The file SIGHUP reads again, if any.
    source: Option<ConfigSource>,
}

impl Daemon {
    /// A daemon for `config` with the built-in writers.
    pub fn new(config: Config) -> Daemon {
        Daemon {
            writers: WriterCatalog::builtin(config.daemon.direct_io),
            config,
            access: ControlAccess::default(),
            source: None,
        }
    }

    /// Lets `access` use `control.sock` (default: the daemon's user and root only).
    pub fn control_access(mut self, access: ControlAccess) -> Daemon {
        self.access = access;
        self
    }

    /// Names the file the config came from, which SIGHUP reads again: the
    /// `[supervision]` limits then apply to every buffer set made afterwards, and
    /// sessions the file declares that the daemon does not have are created (and
    /// started, with `autostart`). Every other difference is logged as needing a
    /// restart; an invalid file changes nothing. Each change is one log line.
    pub fn reload_from(mut self, source: ConfigSource) -> Daemon {
        self.source = Some(source);
        self
    }

    /// Registers a custom writer under `name` for channels to pick.
    pub fn writer(mut self, name: &str, factory: Arc<dyn WriterFactory>) -> Daemon {
        self.writers.register(name, factory);
        self
    }

    /// Serves until SIGINT or SIGTERM.
    pub fn run(self) -> Result<(), DaemonError> {
        self.run_until(wait_for_termination())
    }

    /// Serves until `shutdown` resolves (an embedding program's own stop signal),
    /// then stops every started session, flushing it to disk.
    pub fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
        let rundir = self.config.effective_runtime_dir()?;
        // Chosen and calibrated once, before any ring: every session's rings share it.
        let clock = crate::shm::host_clock()?;
        log::info!("trace clock: {}", clock.name());
        prepare_rundir(&rundir)?;
        recover_outputs(&self.config);
        raise_fd_limit();
        let system = System::new();
        let result = system.block_on(self.serve(rundir.clone(), shutdown));
        let _ = fs::remove_file(rundir.join(CONTROL_SOCKET));
        let _ = fs::remove_file(rundir.join(APPS_SOCKET));
        result
    }

    /// Binds, starts the actors and serves.
    async fn serve(
        self,
        rundir: PathBuf,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let group = self.access.group.as_ref().map(|g| g.gid);
        let control = bind(&rundir, CONTROL_SOCKET, self.access.socket_mode(), group)?;
        let apps = bind(&rundir, APPS_SOCKET, 0o666, None)?;
        let config = &self.config;
        let stats = Arc::new(Stats::default());
        // One I/O thread per CPU: file creation, not the CPU, is what they wait on.
        let io_arbiters: Vec<Arbiter> = (0..cpu_count()).map(|_| Arbiter::new()).collect();
        let relayd = Arc::new(RelaydWriterFactory::new(
            config.supervision.backoff(),
            config.daemon.flush_interval(),
            stats.clone(),
        ));
        let mut writers = self.writers.clone();
        writers.register(RELAYD_WRITER, relayd.clone());
        let factory = BufferFactory::new(
            FactorySettings {
                flush_interval: config.daemon.flush_interval(),
                restart_policy: restart_policy(&config.supervision),
                max_pid_buffer_bytes: config.limits.max_pid_buffer_bytes.0,
                max_pid_buffer_bytes_per_uid: config.limits.pid_buffer_bytes_per_uid(),
                warm_pid_buffer_sets: config.daemon.warm_pid_buffer_sets as usize,
                event_limits: config.limits.events(),
                max_writer_backlog_bytes: config.limits.max_writer_backlog_bytes.0,
                snapshot_kept_dead_apps: config.daemon.snapshot_kept_dead_apps as usize,
            },
            writers.clone(),
            io_arbiters.iter().map(Arbiter::handle).collect(),
            stats.clone(),
        )
        .start();
        let sessions = SessionManager::new(
            SessionSettings {
                output_dir: config.effective_output_dir()?,
                default_channel: config.default_channel_spec("channel0"),
                writers: writers.names(),
                relayd,
            },
            factory.clone(),
            stats.clone(),
        )
        .start();
        let max_frame = config.daemon.max_frame();
        let limits = AppLimits {
            max_frame,
            max_apps: u64::from(config.limits.max_apps),
            max_apps_per_uid: u64::from(config.limits.apps_per_uid()),
            registration_timeout: config.daemon.registration_timeout(),
        };
        let registrar = Registrar::new(factory.clone(), limits, stats.clone()).start();
        for declared in &config.sessions {
            declare_session(config, declared, &sessions).await?;
        }

        actix_rt::spawn(accept_loop(apps, APPS_SOCKET, move |stream| {
            registrar.do_send(Accept(stream))
        }));
        let control_sessions = sessions.clone();
        let access = Arc::new(self.access.clone());
        actix_rt::spawn(accept_loop(control, CONTROL_SOCKET, move |stream| {
            let (sessions, stats) = (control_sessions.clone(), stats.clone());
            actix_rt::spawn(serve_control(
                stream,
                sessions,
                stats,
                access.clone(),
                max_frame,
            ));
        }));
        if let Some(group) = &self.access.group {
            log::info!(
                "members of group {} (gid {}) may control this daemon",
                group.name,
                group.gid
            );
        }
        actix_rt::spawn(reload_on_hangup(
            self.source.clone(),
            self.config.clone(),
            sessions.clone(),
            factory,
        ));
        log::info!("ustraced serving in {}", rundir.display());
        // Both sockets listen since `bind`, and the config's sessions exist.
        if let Err(e) = notify::notify("READY=1") {
            log::error!("{e}");
        }
        shutdown.await;
        log::info!("ustraced stopping: flushing started sessions");
        stop_all(&sessions).await;
        for arbiter in io_arbiters {
            arbiter.stop();
        }
        Ok(())
    }
}

/// Creates a session the config file declares (`[[session]]`), with the same
/// messages and checks as the CLI's requests; the first refusal is the error (it
/// stops a starting daemon).
async fn declare_session(
    config: &Config,
    declared: &SessionConfig,
    sessions: &Addr<SessionManager>,
) -> Result<(), DaemonError> {
    let name = &declared.name;
    let session = Some(name.clone());
    let create = CreateSession {
        name: name.clone(),
        output: declared.output.clone(),
        url: declared.url.clone(),
        live_timer_us: declared.live_timer_us,
        snapshot: declared.snapshot,
    };
    declare(sessions, name, create).await?;
    for channel in &declared.channels {
        let enable = EnableChannel {
            session: session.clone(),
            channel: config.channel_request(channel),
        };
        declare(sessions, name, enable).await?;
        for rule in &channel.events {
            let enable = EnableEvent {
                session: session.clone(),
                channel: Some(channel.name.clone()),
                rule: rule.0.clone(),
            };
            declare(sessions, name, enable).await?;
        }
        if !channel.enabled {
            let disable = DisableChannel {
                session: session.clone(),
                channel: channel.name.clone(),
            };
            declare(sessions, name, disable).await?;
        }
    }
    if declared.rotate_timer.is_some() || declared.rotate_size.is_some() {
        let rotation = EnableRotation {
            session: session.clone(),
            schedule: RotationSchedule {
                timer_us: declared.rotate_timer.map(|t| t.0),
                size: declared.rotate_size.map(|s| s.0),
            },
        };
        declare(sessions, name, rotation).await?;
    }
    if declared.autostart {
        declare(sessions, name, StartSession { session }).await?;
    }
    Ok(())
}

/// Sends one request of the config session `session`; a refusal names it.
async fn declare<M>(
    sessions: &Addr<SessionManager>,
    session: &str,
    request: M,
) -> Result<(), DaemonError>
where
    M: Message<Result = Done> + Send + 'static,
    SessionManager: Handler<M>,
{
    sessions
        .send(request)
        .await
        .map_err(|e| DaemonError::System(io::Error::other(e)))?
        .map(drop)
        .map_err(|source| DaemonError::ConfigSession {
            session: session.to_owned(),
            source,
        })
}

/// The writer restart limits `[supervision]` sets.
fn restart_policy(supervision: &SupervisionConfig) -> RestartPolicy {
    RestartPolicy {
        max_restarts: supervision.max_restarts,
        within: supervision.within(),
        backoff: supervision.backoff(),
    }
}

/// Reloads the config at every SIGHUP, for as long as the daemon serves.
async fn reload_on_hangup(
    source: Option<ConfigSource>,
    mut running: Config,
    sessions: Addr<SessionManager>,
    factory: Addr<BufferFactory>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        log::error!("cannot handle SIGHUP: reloading the config is off");
        return;
    };
    while hangup.recv().await.is_some() {
        if let Err(e) = notify::notify(&notify::reloading_state()) {
            log::error!("{e}");
        }
        match reload(source.as_ref(), &mut running, &sessions, &factory).await {
            Ok(()) => log::info!("config reloaded"),
            Err(e) => log::error!("config not reloaded, the running one is kept: {e}"),
        }
        if let Err(e) = notify::notify("READY=1") {
            log::error!("{e}");
        }
    }
}

/// Applies what can change without a restart from the file `source` names to the
/// daemon running `running` (updated to what was applied), and logs the rest.
async fn reload(
    source: Option<&ConfigSource>,
    running: &mut Config,
    sessions: &Addr<SessionManager>,
    factory: &Addr<BufferFactory>,
) -> Result<(), ReloadError> {
    let source = source.ok_or(ReloadError::NoFile)?;
    let new = source.load()?;
    log::info!("reloading {}", source.path.display());
    if new.supervision != running.supervision {
        log::info!(
            "reload: [supervision] {:?} -> {:?}, for every buffer set made from now on",
            running.supervision,
            new.supervision
        );
        factory
            .send(SetRestartPolicy(restart_policy(&new.supervision)))
            .await
            .map_err(|e| ReloadError::Actor(e.to_string()))?;
        running.supervision = new.supervision.clone();
    }
    let unchanged = |section: &str, same: bool| {
        if !same {
            log::warn!("reload: [{section}] changed; it takes effect at the next restart");
        }
    };
    unchanged("daemon", new.daemon == running.daemon);
    unchanged(
        "channel_defaults",
        new.channel_defaults == running.channel_defaults,
    );
    unchanged("limits", new.limits == running.limits);
    let existing: Vec<String> = match sessions.send(ListSessions { session: None }).await {
        Ok(Ok(list)) => list.into_iter().map(|s| s.name).collect(),
        _ => Vec::new(),
    };
    for old in &running.sessions {
        match new.sessions.iter().find(|s| s.name == old.name) {
            None => log::info!(
                "reload: session {} is no longer declared; it is left as it is (`ustrace destroy {}` removes it)",
                old.name,
                old.name
            ),
            Some(declared) if declared != old && existing.contains(&old.name) => log::warn!(
                "reload: session {} changed in the config; the running one is kept (`ustrace destroy {}` and another reload apply it)",
                old.name,
                old.name
            ),
            Some(_) => {}
        }
    }
    for declared in new.sessions.iter().filter(|s| !existing.contains(&s.name)) {
        // The running channel defaults: a change of them waits for a restart.
        match declare_session(running, declared, sessions).await {
            Ok(()) => log::info!("reload: session {} created from the config", declared.name),
            Err(e) => log::error!("reload: {e}"),
        }
    }
    running.sessions = new.sessions;
    Ok(())
}

/// Recovers the traces a crashed daemon may have left in the output directories
/// this one finds (`daemon.output_dir` and each `[[session]]`'s `output`), before
/// anything is served: each then reads up to its last complete packet (see
/// [`crate::trace::recover`]). Every change and every trace it cannot recover is
/// logged; none stops the daemon. Two daemons must not share an output directory:
/// this would cut the packet the other is appending.
fn recover_outputs(config: &Config) {
    let configured = config.sessions.iter().filter_map(|s| s.output.clone());
    let dirs: Vec<PathBuf> = configured
        .chain(config.effective_output_dir().ok())
        .filter(|d| d.is_dir())
        .collect();
    for dir in dirs {
        let recovery = crate::trace::recover::recover(&dir);
        for repair in recovery.repairs {
            log::warn!("recovered {repair}");
        }
        for e in recovery.errors {
            log::error!("cannot recover {}: {e}", dir.display());
        }
    }
}

/// Creates the runtime directory (0755) if needed, never wider than that even for a
/// moment (whatever the umask), and refuses one that another user owns: whoever owns
/// it could replace the sockets.
fn prepare_rundir(rundir: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let err = |source| DaemonError::RuntimeDir {
        path: rundir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(rundir)
        .map_err(err)?;
    let owner = fs::metadata(rundir).map_err(err)?.uid();
    let me = nix::unistd::geteuid().as_raw();
    if owner != me {
        return Err(err(io::Error::other(format!(
            "owned by uid {owner}, not by the daemon's uid {me}"
        ))));
    }
    fs::set_permissions(rundir, fs::Permissions::from_mode(0o755)).map_err(err)
}

/// Binds socket `name` in `rundir` with `mode` (and `group`, if any), replacing a
/// stale file but never a live daemon's socket.
///
/// The socket appears at its path with its final mode and group, with no window in
/// which it is wider: `bind` creates the file with the process's umask (0777 under
/// umask 000), so it is bound inside a private 0700 directory, chmodded and
/// chowned there (nobody else can reach it), then renamed into place (atomic).
fn bind(
    rundir: &Path,
    name: &str,
    mode: u32,
    group: Option<nix::unistd::Gid>,
) -> Result<UnixListener, DaemonError> {
    use std::os::unix::fs::DirBuilderExt;
    let path = rundir.join(name);
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        return Err(DaemonError::AlreadyRunning(path));
    }
    let err = |source| DaemonError::Bind {
        path: path.clone(),
        source,
    };
    let private = rundir.join(format!(".{name}.{}", std::process::id()));
    // A leftover of a daemon that died here with our pid; the runtime directory is
    // ours alone (prepare_rundir), so nobody else made it.
    let _ = fs::remove_dir_all(&private);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(err)?;
    let staged = private.join(name);
    let listener = UnixListener::bind(&staged)
        .and_then(|listener| {
            fs::set_permissions(&staged, fs::Permissions::from_mode(mode))?;
            if let Some(gid) = group {
                nix::unistd::chown(&staged, None, Some(gid)).map_err(io::Error::from)?;
            }
            fs::rename(&staged, &path)?;
            Ok(listener)
        })
        .map_err(err);
    let _ = fs::remove_file(&staged);
    let _ = fs::remove_dir(&private);
    listener
}

/// Accepts connections on `listener` (called `name` in logs) for ever, handing each
/// to `serve`. When the daemon is out of file descriptors it backs off, 10 ms
/// doubling to 500 ms, with one log line per episode: retrying at once would burn the
/// actor thread that frees fds (teardowns) and flood the log.
async fn accept_loop(listener: UnixListener, name: &str, mut serve: impl FnMut(UnixStream)) {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    let mut pause = FIRST_PAUSE;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                pause = FIRST_PAUSE;
                serve(stream);
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                if pause == FIRST_PAUSE {
                    log::error!("{name} accept: {e}; backing off until fds are freed");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(e) => log::warn!("{name} accept: {e}"),
        }
    }
}

/// Raises the soft limit on open files to the hard one: every per-PID ring set
/// alive holds an eventfd and one memfd per CPU.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        log::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
    }
}

/// How long a control client has to send its hello and request.
const CONTROL_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a Hello and one request, answers it; a peer that `access` refuses gets
/// the reason as its answer (read first, so that the client's send never meets a
/// closed socket).
async fn serve_control(
    stream: UnixStream,
    sessions: Addr<SessionManager>,
    stats: Arc<Stats>,
    access: Arc<ControlAccess>,
    max_frame: usize,
) {
    let allowed = match stream.peer_cred() {
        Ok(cred) => access.check(cred.uid(), cred.gid(), cred.pid()),
        Err(e) => Err(format!("cannot tell who is connected (SO_PEERCRED): {e}")),
    };
    let (mut reader, writer) = stream.into_split();
    let request = async {
        framed::read_hello(&mut reader).await?;
        framed::read_frame::<ControlRequest>(&mut reader, max_frame)
            .await?
            .ok_or(FrameError::NoRequest)
    };
    // A client that connects and says nothing must not hold a task and an fd for ever.
    let request = tokio::time::timeout(CONTROL_REQUEST_TIMEOUT, request)
        .await
        .unwrap_or(Err(FrameError::NoRequestInTime(CONTROL_REQUEST_TIMEOUT)));
    let reply = match (request, allowed) {
        (Ok(_), Err(why)) => {
            log::warn!("control.sock: refused: {why}");
            Err(format!("refused: {why}"))
        }
        (Ok(request), Ok(())) => control_socket::answer(request, &sessions, &stats).await,
        (Err(e), _) => {
            log::warn!("control.sock: {e}; connection closed");
            Err(format!("bad request: {e}"))
        }
    };
    if let Err(e) = framed::write_frame(&writer, &reply, &[]).await {
        log::warn!("control.sock reply: {e}");
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Stops every started session so that its trace is complete on disk.
async fn stop_all(sessions: &Addr<SessionManager>) {
    let Ok(Ok(list)) = sessions.send(ListSessions { session: None }).await else {
        return;
    };
    for session in list.into_iter().filter(|s| s.started) {
        let stop = StopSession {
            session: Some(session.name.clone()),
        };
        if let Ok(Err(e)) = sessions.send(stop).await {
            log::error!("stopping {}: {e}", session.name);
        }
    }
}
