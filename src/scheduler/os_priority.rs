//! OS priorities of the scheduler's threads and of the async runtime; the only unsafe code of the
//! crate (`sched_setscheduler`).

/// The tokio runtime the request path runs on. Every reply comes from a scheduler thread, so
/// it wakes its task through tokio's global queue, which a busy worker by default checks only
/// every 61 polls; under a herd of new requests a block's reply would wait behind them. Checking
/// every 4 polls costs little and keeps that wait to a few polls. (One worker fewer than the
/// cores was tried too: a few runs were better, but its worst runs were far worse.)
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .global_queue_interval(4)
        .thread_name("http")
        .on_thread_start(|| set_own_nice(RUNTIME_NICE))
        .build()
}

/// The OS priority order of the signer's threads: the devices' block threads at real-time
/// priority where allowed ([`raise_thread_priority`]); session threads and the rescue worker at
/// normal priority, since their work is short; the async runtime (parsing, slashing checks,
/// replies) at nice 5, since a herd of requests must not take the cores from a block's
/// signature; bulk signing at `SCHED_IDLE`, on what is left.
pub(super) const RUNTIME_NICE: i32 = 5;

/// Lower the calling thread's priority to `nice` (raising it back would need privilege).
pub(crate) fn set_own_nice(nice: i32) {
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        tracing::debug!(error = %e, "could not lower a thread's priority");
    }
}

/// Bulk signing threads yield the OS's cores to everything short and urgent: device threads,
/// the rescue worker and the HTTP runtime. A lower nice value is not enough: Linux's EEVDF
/// lets a running thread finish its slice (about 3 ms) before a woken one of any nice value
/// runs, which held a block's signature for that long. A `SCHED_IDLE` thread is preempted at
/// once, and a thread may move itself there without privilege. Elsewhere, or if refused: nice
/// 10. The cost: on a host shared with CPU-hungry processes, bulk signing gets only what they
/// leave; the rescue worker then takes over what waits too long
/// ([`SchedulerConfig::starved_after`]).
pub(super) fn lower_thread_priority() {
    if let Err(e) = os_policy::set_current_thread_idle() {
        tracing::debug!(error = %e, "SCHED_IDLE refused; lowering the nice value instead");
        set_own_nice(10);
    }
}

/// A device's block thread runs at `SCHED_FIFO` priority 1, the lowest real-time one, where
/// the host allows it (`CAP_SYS_NICE`, or `LimitRTPRIO=1` in a systemd unit): it then takes a
/// core the moment a block arrives, and keeps it while it opens and signs. At normal priority
/// it may first wait for a running thread's time slice, and be preempted mid-signature; with
/// two cores under a herd that was a block's worst delay (p99 ÷ idle 1.9–2.7 in `bench
/// scenario`, against 1.4–2.0 at real-time). It sleeps on a condition variable between blocks,
/// so it cannot hold a core, and the kernel keeps 5 % of every core for normal threads anyway.
/// Refused, it stays at normal priority (said once in the log).
pub(super) fn raise_thread_priority() {
    static TOLD: std::sync::Once = std::sync::Once::new();
    if let Err(e) = os_policy::set_current_thread_realtime() {
        TOLD.call_once(|| {
            tracing::info!(error = %e, "blocks are signed at normal OS priority: real-time priority needs CAP_SYS_NICE or an RLIMIT_RTPRIO of 1 (systemd: LimitRTPRIO=1)");
        });
    }
}

/// The calls the safe system crates lack: `sched_setscheduler` on the calling thread.
#[allow(unsafe_code)]
mod os_policy {
    /// Move the calling thread to `SCHED_IDLE`.
    #[cfg(target_os = "linux")]
    pub(super) fn set_current_thread_idle() -> std::io::Result<()> {
        set_current_thread(libc::SCHED_IDLE, 0)
    }

    /// Move the calling thread to `SCHED_FIFO`, priority 1.
    #[cfg(target_os = "linux")]
    pub(super) fn set_current_thread_realtime() -> std::io::Result<()> {
        set_current_thread(libc::SCHED_FIFO, 1)
    }

    #[cfg(target_os = "linux")]
    pub(super) fn set_current_thread(
        policy: libc::c_int,
        priority: libc::c_int,
    ) -> std::io::Result<()> {
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: pid 0 is the calling thread; `param` is a valid, initialised sched_param that
        // outlives the call, which only reads it.
        let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Not available here.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn set_current_thread_idle() -> std::io::Result<()> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }

    /// Not available here.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn set_current_thread_realtime() -> std::io::Result<()> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}
