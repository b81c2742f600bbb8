//! A capped pool of owned PKCS#11 sessions for one token.
//!
//! Sessions are `Send` but not `Sync`, so the pool lends a whole session to one caller at a time
//! and takes it back on drop. The cap is hard: at most `max` sessions exist (idle + lent) at any
//! moment. A session that reports it is gone (device removed, handle invalid) is discarded
//! together with every idle session of the same generation, since a token reset invalidates all
//! of them at once.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::session::Session;

/// Counters a caller can read to see what the pool did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// The cap.
    pub max_sessions: usize,
    /// Sessions lent out right now.
    pub in_use: usize,
    /// The most sessions ever lent out at once.
    pub peak_in_use: usize,
    /// Sessions opened since start (including replacements).
    pub opened: u64,
    /// Sessions thrown away because the device said they were gone.
    pub discarded: u64,
}

struct State {
    idle: Vec<(Session, u64)>,
    /// Sessions lent out plus sessions being opened.
    leased: usize,
    generation: u64,
}

pub(crate) struct SessionPool {
    max: usize,
    state: Mutex<State>,
    freed: Condvar,
    in_use: AtomicUsize,
    peak: AtomicUsize,
    opened: AtomicU64,
    discarded: AtomicU64,
}

/// What a caller must wait for at most before the pool gives up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

impl SessionPool {
    pub(crate) fn new(max: usize) -> Self {
        SessionPool {
            max: max.max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                leased: 0,
                generation: 0,
            }),
            freed: Condvar::new(),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Borrow a session: an idle one, or a new one from `open` while under the cap, or wait.
    /// `Ok(None)` means no session became free within the timeout.
    pub(crate) fn acquire<E>(
        &self,
        open: impl FnOnce() -> Result<Session, E>,
    ) -> Result<Option<Lease<'_>>, E> {
        let deadline = Instant::now() + ACQUIRE_TIMEOUT;
        let mut st = self.lock();
        loop {
            while let Some((session, gen)) = st.idle.pop() {
                if gen == st.generation {
                    st.leased += 1;
                    let generation = st.generation;
                    drop(st);
                    return Ok(Some(self.lend(session, generation)));
                }
                drop(session);
            }
            if st.leased < self.max {
                st.leased += 1;
                let generation = st.generation;
                drop(st);
                return match open() {
                    Ok(session) => {
                        self.opened.fetch_add(1, Ordering::Relaxed);
                        Ok(Some(self.lend(session, generation)))
                    }
                    Err(e) => {
                        self.lock().leased -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            st = self
                .freed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn lend(&self, session: Session, generation: u64) -> Lease<'_> {
        let now = self.in_use.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Lease {
            session: Some(session),
            generation,
            pool: self,
            broken: false,
        }
    }

    fn give_back(&self, session: Option<Session>, generation: u64, broken: bool) {
        self.in_use.fetch_sub(1, Ordering::SeqCst);
        let mut st = self.lock();
        st.leased -= 1;
        if broken {
            self.discarded.fetch_add(1, Ordering::Relaxed);
            if st.generation == generation {
                st.generation += 1;
            }
        } else if let Some(s) = session {
            if generation == st.generation {
                st.idle.push((s, generation));
            }
        }
        drop(st);
        self.freed.notify_one();
    }

    /// Close every idle session (they are re-opened on demand).
    pub(crate) fn drain_idle(&self) {
        let mut st = self.lock();
        st.generation += 1;
        st.idle.clear();
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            max_sessions: self.max,
            in_use: self.in_use.load(Ordering::SeqCst),
            peak_in_use: self.peak.load(Ordering::SeqCst),
            opened: self.opened.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
        }
    }
}

/// A session on loan from the pool; returns itself on drop.
pub(crate) struct Lease<'a> {
    session: Option<Session>,
    generation: u64,
    pool: &'a SessionPool,
    broken: bool,
}

impl Lease<'_> {
    pub(crate) fn session(&self) -> &Session {
        // Only `Drop` takes the session out.
        self.session
            .as_ref()
            .expect("lease holds its session until dropped")
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The device said this session is gone: drop it and every idle sibling.
    pub(crate) fn discard(mut self) {
        self.broken = true;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let session = self.session.take();
        let session = if self.broken {
            // Closing a dead handle only produces an error we cannot act on.
            drop(session);
            None
        } else {
            session
        };
        self.pool.give_back(session, self.generation, self.broken);
    }
}
