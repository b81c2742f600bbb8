//! Threshold keys in the scheduler: fan a job out to t devices holding its shares, hedge a late
//! one, replace a failed or faulty one, and combine what comes back
//! (keys::crate::keys::threshold::sign_with_opened_shares) into a verified signature.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blst::min_pk::{SecretKey, Signature};

use super::state::{CpuTask, DevTask, Inner, Opened, Reply};
use super::{Ctx, State};
use super::{JobError, Limit, Scheduler, SignJob};
use crate::error::SignerError;
use crate::keys::threshold::{
    combine_many_verified, partial_sign, sign_many_with_opened_shares, Combination, CombineError,
    HashedMessage, LocalCombination, ThresholdKey,
};
use crate::keys::KeyRecord;
use crate::keys::ShareId;

/// The state of one threshold signature across its devices.
pub(super) struct ThresholdJob {
    pub(super) key: Arc<ThresholdKey>,
    /// Share indices asked so far (queued, in flight or answered).
    pub(super) asked: Vec<usize>,
    /// Shares whose device failed, or whose partial was wrong.
    pub(super) excluded: Vec<usize>,
    /// What came back for shares not yet combined: opened secrets, participants' partials.
    pub(super) collected: Vec<(usize, Opened)>,
    /// Device tasks queued or in flight.
    pub(super) outstanding: usize,
    /// A CPU task holds t shares right now.
    pub(super) combining: bool,
    /// Why devices failed, for the 503 message.
    pub(super) failures: Vec<String>,
}

impl Inner {
    pub(super) fn threshold_key(&self, record: &KeyRecord) -> Result<Arc<ThresholdKey>, JobError> {
        let mut cache = self
            .threshold_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(k) = cache.get(&record.pubkey) {
            return Ok(k.clone());
        }
        let key = Arc::new(ThresholdKey::from_record(record).map_err(JobError::Failed)?);
        cache.insert(record.pubkey, key.clone());
        Ok(key)
    }

    /// The shares to ask next: not yet asked or excluded, on an open and enabled device or an
    /// available participant (only with the request to forward to it), the least loaded first
    /// (queued + in flight), then the lowest id.
    pub(super) fn pick_shares(
        &self,
        st: &State,
        ctx: &Ctx,
        job: &ThresholdJob,
        want: usize,
    ) -> Vec<usize> {
        let mut candidates: Vec<(usize, usize, u64)> = job
            .key
            .shares
            .iter()
            .enumerate()
            .filter(|(i, _)| !job.asked.contains(i) && !job.excluded.contains(i))
            .filter_map(|(i, share)| {
                let d = *self.dev_index.get(&share.device)?;
                let station = &self.stations[d];
                (station.is_enabled() && (!station.is_remote() || ctx.request.is_some()))
                    .then(|| (i, Inner::load(st, d), share.id.get()))
            })
            .collect();
        candidates.sort_by_key(|&(_, load, id)| (load, id));
        candidates
            .into_iter()
            .take(want)
            .map(|(i, _, _)| i)
            .collect()
    }

    /// Queue a threshold job's visit to share `i`'s device.
    pub(super) fn ask(
        &self,
        st: &mut State,
        ctx: &Arc<Ctx>,
        job: &mut ThresholdJob,
        i: usize,
    ) -> Option<usize> {
        let d = *self.dev_index.get(&job.key.shares.get(i)?.device)?;
        job.asked.push(i);
        job.outstanding += 1;
        st.waiting += 1;
        st.dev_q[d].push(DevTask(ctx.clone(), i));
        Some(d)
    }

    /// Ask replacements for shares that failed, or give up with a 503 when fewer than t shares
    /// can still come back. Call with the state lock held.
    pub(super) fn top_up(&self, st: &mut State, ctx: &Arc<Ctx>, job: &mut ThresholdJob) {
        if job.combining {
            return;
        }
        let need = job
            .key
            .threshold
            .saturating_sub(job.collected.len() + job.outstanding);
        if need == 0 {
            return;
        }
        let picks = self.pick_shares(st, ctx, job, need);
        for i in &picks {
            if let Some(d) = self.ask(st, ctx, job, *i) {
                self.notify_device(st, d);
            }
        }
        if picks.len() < need && job.outstanding == 0 {
            job.collected.clear();
            ctx.answer(Err(JobError::Unavailable(format!(
                "fewer than {} of the {} devices and participants holding shares of {} can \
                 sign: {}",
                job.key.threshold,
                job.key.shares.len(),
                ctx.key.pubkey,
                if job.failures.is_empty() {
                    "devices disabled or not open, participants down or out of service".to_owned()
                } else {
                    job.failures.join("; ")
                }
            ))));
        }
    }
}

impl Scheduler {
    pub(super) fn hedge(&self, ctx: &Arc<Ctx>) {
        let Some(thr) = &ctx.threshold else { return };
        let inner = &self.inner;
        let mut st = inner.lock();
        let mut job = thr.lock().unwrap_or_else(|p| p.into_inner());
        if job.combining || ctx.gone() {
            return;
        }
        let Some(i) = inner.pick_shares(&st, ctx, &job, 1).first().copied() else {
            return;
        };
        // Only a station that can start it now: when every station is busy the job is late
        // because the signer is, and an extra partial would only add to the load (at 64 jobs
        // in flight, hundreds a run were asked and thrown away).
        let idle_now = job
            .key
            .shares
            .get(i)
            .and_then(|s| inner.dev_index.get(&s.device))
            .is_some_and(|&d| Inner::load(&st, d) < inner.caps[d]);
        if idle_now {
            if let Some(d) = inner.ask(&mut st, ctx, &mut job, i) {
                inner.metrics.hedges.fetch_add(1, Ordering::Relaxed);
                inner.notify_device(&st, d);
            }
        }
    }

    pub(super) fn submit_threshold(
        &self,
        job: SignJob,
        tx: Reply,
        deadline: (Instant, Limit),
        now: Instant,
    ) -> Result<Arc<Ctx>, JobError> {
        let inner = &self.inner;
        let key = inner.threshold_key(&job.key)?;
        let t = key.threshold;
        let mut st = inner.lock();
        if st.waiting + t > inner.config.queue_capacity {
            inner.metrics.shed_overload[job.class as usize].fetch_add(1, Ordering::Relaxed);
            return Err(JobError::Overloaded(job.class.label()));
        }
        let id = st.next_id;
        st.next_id += 1;
        let ctx = Ctx::new(
            id,
            job,
            deadline,
            now,
            tx,
            Some(Mutex::new(ThresholdJob {
                key,
                asked: Vec::new(),
                excluded: Vec::new(),
                collected: Vec::new(),
                outstanding: 0,
                combining: false,
                failures: Vec::new(),
            })),
        );
        let thr = ctx
            .threshold
            .as_ref()
            .ok_or_else(|| JobError::Unavailable("internal".into()))?;
        let mut tj = thr.lock().unwrap_or_else(|p| p.into_inner());
        let picks = inner.pick_shares(&st, &ctx, &tj, t);
        if picks.len() < t {
            let down: Vec<String> = tj
                .key
                .shares
                .iter()
                .filter_map(|s| inner.dev_index.get(&s.device).map(|d| &inner.stations[*d]))
                .filter(|s| !s.is_enabled())
                .map(|s| s.name().to_owned())
                .collect();
            return Err(JobError::Unavailable(format!(
                "fewer than {t} of the {} devices and participants holding shares of {} are \
                 available (unavailable: {})",
                tj.key.shares.len(),
                ctx.key.pubkey,
                if down.is_empty() {
                    "none".to_owned()
                } else {
                    down.join(", ")
                }
            )));
        }
        let mut devices = Vec::new();
        for i in picks {
            devices.extend(inner.ask(&mut st, &ctx, &mut tj, i));
        }
        drop(tj);
        for d in devices {
            inner.notify_device(&st, d);
        }
        drop(st);
        Ok(ctx)
    }
}

/// Make the signature from what t stations gave: t opened secrets become weighted partials
/// (the local path); with participants' partials among them, every partial and the sum are
/// verified. A combination that does not verify names the faulty shares, excludes them and
/// asks other stations; no unverified signature is ever answered.
pub(super) fn combine_threshold(inner: &Arc<Inner>, task: CpuTask) {
    let Some(thr) = &task.ctx.threshold else {
        return;
    };
    let key = thr.lock().unwrap_or_else(|p| p.into_inner()).key.clone();
    let hashed = inner.hashed.get(&task.ctx.root);
    let mut opened = Vec::new();
    let mut remote = Vec::new();
    for (i, got) in &task.secrets {
        let Some(share) = key.shares.get(*i) else {
            continue;
        };
        match got {
            Opened::Secret(secret) => opened.push((share.id, secret)),
            Opened::Partial(sig) => remote.push((share.id, *sig)),
        }
    }
    // THE sign of the decrypt-then-sign (`keys`): partials, combined, verified.
    let outcome = if remote.is_empty() {
        crate::keys::threshold::sign_with_opened_shares(&key, &hashed, &opened)
    } else {
        crate::keys::threshold::sign_with_remote_partials(&key, &hashed, &opened, &remote)
    };
    drop(opened);
    finish_combination(inner, task, &key, outcome);
}

/// True for a CPU task that holds a participant's partial (combined by
/// [`combine_remote_batch`], with others like it).
pub(super) fn holds_remote_partials(task: &CpuTask) -> bool {
    task.ctx.threshold.is_some()
        && task
            .secrets
            .iter()
            .any(|(_, got)| matches!(got, Opened::Partial(_)))
}

/// [`combine_threshold`] for many tasks that hold participants' partials, verified together
/// ([`combine_many_verified`]: one Miller loop per signature and one final exponentiation for
/// the batch, where each alone costs two and one). A batch that does not verify is verified
/// again signature by signature, so a faulty partial is named, and only its signature waits
/// for another station.
pub(super) fn combine_remote_batch(inner: &Arc<Inner>, tasks: Vec<CpuTask>) {
    struct Prepared {
        key: Arc<ThresholdKey>,
        hashed: Arc<HashedMessage>,
        partials: Vec<(ShareId, Signature)>,
    }
    let prepare = |task: &CpuTask| {
        let (key, hashed) = key_and_message(inner, task)?;
        let partials = task
            .secrets
            .iter()
            .filter_map(|(i, got)| {
                let id = key.shares.get(*i)?.id;
                Some(match got {
                    Opened::Secret(secret) => (id, partial_sign(secret, &hashed)),
                    Opened::Partial(sig) => (id, *sig),
                })
            })
            .collect();
        Some(Prepared {
            key,
            hashed,
            partials,
        })
    };
    let prepared: Vec<Option<Prepared>> = tasks.iter().map(prepare).collect();
    let jobs: Vec<Combination<'_>> = prepared
        .iter()
        .flatten()
        .map(|p| Combination {
            key: &p.key,
            hashed: &p.hashed,
            partials: &p.partials,
        })
        .collect();
    count_batched(inner, jobs.len());
    let outcomes = combine_many_verified(&jobs);
    let keys = prepared.into_iter().map(|p| p.map(|p| p.key)).collect();
    finish_each(inner, tasks, keys, outcomes);
}

/// Count `n` signatures verified together, if they are more than one.
fn count_batched(inner: &Inner, n: usize) {
    if n > 1 {
        inner
            .metrics
            .batch_verified
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A threshold task's key and its message, hashed (`None` for a key that is not a threshold
/// key).
fn key_and_message(
    inner: &Inner,
    task: &CpuTask,
) -> Option<(Arc<ThresholdKey>, Arc<HashedMessage>)> {
    let thr = task.ctx.threshold.as_ref()?;
    let key = thr.lock().unwrap_or_else(|p| p.into_inner()).key.clone();
    Some((key, inner.hashed.get(&task.ctx.root)))
}

/// True for a CPU task of a threshold key whose t shares were all opened here (combined by
/// [`combine_local_batch`], with others like it).
pub(super) fn holds_local_shares(task: &CpuTask) -> bool {
    task.ctx.threshold.is_some()
        && !task.secrets.is_empty()
        && task
            .secrets
            .iter()
            .all(|(_, got)| matches!(got, Opened::Secret(_)))
}

/// [`combine_threshold`] for many tasks whose shares were all opened here: each one's weighted
/// partials summed, and the sums verified together ([`sign_many_with_opened_shares`]). A batch
/// that does not verify is verified again signature by signature, so a faulty device is named,
/// and only its signature waits for another device.
pub(super) fn combine_local_batch(inner: &Arc<Inner>, tasks: Vec<CpuTask>) {
    struct Prepared<'t> {
        key: Arc<ThresholdKey>,
        hashed: Arc<HashedMessage>,
        opened: Vec<(ShareId, &'t SecretKey)>,
    }
    fn prepare<'t>(inner: &Inner, task: &'t CpuTask) -> Option<Prepared<'t>> {
        let (key, hashed) = key_and_message(inner, task)?;
        let opened = task
            .secrets
            .iter()
            .filter_map(|(i, got)| match got {
                Opened::Secret(secret) => Some((key.shares.get(*i)?.id, secret)),
                Opened::Partial(_) => None,
            })
            .collect();
        Some(Prepared {
            key,
            hashed,
            opened,
        })
    }
    // The opened secrets are borrowed from the tasks until every combination is made; the
    // tasks then go to their answers.
    let (keys, outcomes) = {
        let prepared: Vec<Option<Prepared<'_>>> = tasks.iter().map(|t| prepare(inner, t)).collect();
        let jobs: Vec<LocalCombination<'_>> = prepared
            .iter()
            .flatten()
            .map(|p| LocalCombination {
                key: &p.key,
                hashed: &p.hashed,
                opened: &p.opened,
            })
            .collect();
        count_batched(inner, jobs.len());
        let outcomes = sign_many_with_opened_shares(&jobs);
        let keys = prepared.into_iter().map(|p| p.map(|p| p.key)).collect();
        (keys, outcomes)
    };
    finish_each(inner, tasks, keys, outcomes);
}

/// Answer each task of a batch with its outcome: `keys` has a key per task (`None` for a task
/// that was not combined), `outcomes` an outcome per combined task, in order.
fn finish_each(
    inner: &Arc<Inner>,
    tasks: Vec<CpuTask>,
    keys: Vec<Option<Arc<ThresholdKey>>>,
    outcomes: Vec<Result<Signature, CombineError>>,
) {
    let mut outcomes = outcomes.into_iter();
    for (task, key) in tasks.into_iter().zip(keys) {
        let Some(key) = key else { continue };
        let Some(outcome) = outcomes.next() else {
            break;
        };
        finish_combination(inner, task, &key, outcome);
    }
}

/// Answer a combination's outcome: the signature, or the faulty shares excluded and others
/// asked in their place, or the failure.
fn finish_combination(
    inner: &Arc<Inner>,
    task: CpuTask,
    key: &ThresholdKey,
    outcome: Result<Signature, CombineError>,
) {
    let CpuTask { ctx, secrets, .. } = task;
    let Some(thr) = &ctx.threshold else { return };
    let outcome = outcome.map_err(|e| match e {
        CombineError::Unverified { faulty } => JobError::Faulty(faulty),
        other => JobError::Failed(SignerError::Bls(other.to_string())),
    });
    match outcome {
        Ok(sig) => ctx.answer(Ok(sig)),
        Err(JobError::Faulty(faulty)) => {
            let mut st = inner.lock();
            let mut job = thr.lock().unwrap_or_else(|p| p.into_inner());
            job.combining = false;
            let mut named = Vec::new();
            for (i, got) in secrets {
                let Some(share) = key.shares.get(i) else {
                    continue;
                };
                if faulty.contains(&share.id) {
                    job.excluded.push(i);
                    let station = inner
                        .dev_index
                        .get(&share.device)
                        .map(|d| &inner.stations[*d]);
                    let what = match station {
                        Some(super::state::Station::Participant(p)) => {
                            p.metrics.faulty.fetch_add(1, Ordering::Relaxed);
                            "participant"
                        }
                        _ => "device",
                    };
                    named.push(format!("share {} on {what} {}", share.id, share.device));
                    inner
                        .metrics
                        .faulty_shares
                        .get(&share.device)
                        .observe(Duration::ZERO);
                } else {
                    job.collected.push((i, got));
                }
            }
            tracing::error!(validator = %ctx.key.pubkey, faulty = %named.join(", "), "a partial signature did not verify; excluding the faulty share(s)");
            if named.is_empty() {
                job.collected.clear();
                ctx.answer(Err(JobError::Failed(SignerError::Bls(format!(
                    "combined signature for {} did not verify and no share could be blamed; nothing was released",
                    ctx.key.pubkey
                )))));
                return;
            }
            job.failures
                .push(format!("wrong partial signature from {}", named.join(", ")));
            inner.top_up(&mut st, &ctx, &mut job);
        }
        Err(e) => ctx.answer(Err(e)),
    }
}
