//! The worker threads: per device, session threads and a block thread that open envelopes
//! (keys::open_share); the CPU workers that sign them (keys::sign_opened), and the rescue
//! worker that stands in for starved bulk workers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use blst::min_pk::SecretKey;

use super::queue::{Class, ClassQueues, Next, Queued};
use super::state::{CpuTask, DevTask, Inner, Opened, Station};
use super::threshold::{
    combine_local_batch, combine_remote_batch, combine_threshold, holds_local_shares,
    holds_remote_partials,
};
use super::{Ctx, State};
use super::{JobError, SignerError, Stage};
use crate::metrics::{in_stage, Stage as MetricStage};

pub(super) fn device_worker(inner: Arc<Inner>, d: usize, blocks: bool) {
    let station = &inner.stations[d];
    let remote = station.is_remote();
    let cap = inner.cap(d, blocks);
    let fifo = inner.config.fifo;
    let cv = if blocks {
        &inner.block_cv[d]
    } else {
        &inner.dev_cv[d]
    };
    loop {
        let (ctx, share_index, alike) = {
            let mut st = inner.lock();
            loop {
                if st.shutdown {
                    return;
                }
                // Background may run only if another session stays free.
                let free = cap.saturating_sub(st.dev_busy[d]);
                let allow_background = free >= 2;
                let now = Instant::now();
                let next = if free == 0 {
                    Next::Idle
                } else if blocks {
                    pop_blocks_only(&mut st.dev_q[d], now)
                } else if !fifo && matches!(st.dev_q[d].head(), Some((Class::Block, _))) {
                    // A block waits: the session is its block thread's.
                    Next::Idle
                } else if remote || inner.cpu_room(&st) {
                    st.dev_q[d].pop(now, allow_background)
                } else if fifo {
                    pop_blocks_only(&mut st.dev_q[d], now)
                } else {
                    Next::Idle
                };
                match next {
                    Next::Run(DevTask(ctx, share)) => {
                        st.waiting -= 1;
                        st.dev_busy[d] += 1;
                        if ctx.class != Class::Block && !remote {
                            st.opening += 1;
                        }
                        // More may start beside this job (here or on another device): wake a
                        // thread for it, so a slow device's sessions fill up without waiting
                        // for a CPU worker to take an envelope.
                        inner.wake_a_device(&st);
                        inner.stats.peak_device_busy[d].fetch_max(st.dev_busy[d], Ordering::SeqCst);
                        if ctx.class == Class::Background {
                            st.dev_busy_background[d] += 1;
                            inner.stats.peak_background_busy[d]
                                .fetch_max(st.dev_busy_background[d], Ordering::SeqCst);
                        }
                        let alike = if remote && !blocks {
                            take_alike_partials(&inner, &mut st, d, &ctx, now, allow_background)
                        } else {
                            Vec::new()
                        };
                        break (ctx, share, alike);
                    }
                    next @ (Next::Expired(_) | Next::Cancelled(_)) => {
                        clear_unstarted(&inner, &mut st, next);
                    }
                    Next::Idle => {
                        st = cv.wait(st);
                    }
                }
            }
        };
        if !alike.is_empty() {
            let mut jobs = vec![(ctx, share_index)];
            jobs.extend(alike);
            ask_participant_batch(&inner, d, blocks, jobs);
            continue;
        }
        inner.metrics.queue_wait[ctx.class as usize].observe(ctx.enqueued.elapsed());
        let started = Instant::now();
        let opened = operate(station, &ctx, share_index);
        let took = started.elapsed();
        inner.metrics.device_op.get(station.name()).observe(took);
        if ctx.class != Class::Block && !remote {
            inner.pace.observe_device_op(took);
        }

        let mut st = inner.lock();
        st.dev_busy[d] -= 1;
        if ctx.class == Class::Background {
            st.dev_busy_background[d] -= 1;
        }
        // A block waiting for this session: its block thread takes it.
        if !fifo && !blocks && matches!(st.dev_q[d].head(), Some((Class::Block, _))) {
            inner.block_cv[d].notify_one();
        }
        if ctx.class != Class::Block && !remote {
            st.opening -= 1;
        }
        match (&ctx.threshold, opened) {
            // A block is signed by the (block) thread that opened it: handing it to a CPU
            // worker would add a thread wake-up, which on busy cores can cost a time slice.
            (None, Ok(Opened::Secret(secret)))
                if ctx.class == Class::Block && !inner.config.fifo =>
            {
                // This session is free while the block is signed: another thread may use it.
                if inner.runnable_on(&st, d).is_some() {
                    inner.notify_device(&st, d);
                }
                drop(st);
                sign_whole(&inner, &ctx, &secret);
            }
            (None, Ok(secret)) => {
                if ctx.class != Class::Block {
                    st.cpu_buffered += 1;
                }
                st.cpu_q.push(CpuTask {
                    secrets: vec![(share_index, secret)],
                    ctx,
                    queued_at: Instant::now(),
                });
                drop(st);
                inner.notify_cpu();
            }
            (None, Err(e)) => {
                // A place ahead of the CPU freed with no envelope to fill it.
                inner.wake_a_device(&st);
                drop(st);
                ctx.answer(Err(e));
            }
            (Some(_), opened) => {
                if let Some(task) =
                    settle_share(&inner, &mut st, station, &ctx, share_index, opened, took)
                {
                    // As a whole key's block: combined where it stands.
                    drop(st);
                    if still_wanted(&inner, &ctx, Stage::Device) {
                        combine_threshold(&inner, task);
                    }
                    continue;
                }
            }
        }
        // This thread looks at its queue again itself; a sibling is woken only by a place
        // freed elsewhere (a CPU buffer slot) or by a job it may start beside this one.
    }
}

/// Answer or drop a job that left a device queue without starting: its deadline passed, or its
/// client went away.
fn clear_unstarted(inner: &Inner, st: &mut State, next: Next<DevTask>) {
    let (Next::Expired(DevTask(ctx, _)) | Next::Cancelled(DevTask(ctx, _))) = &next else {
        return;
    };
    st.waiting -= 1;
    if let Some(thr) = &ctx.threshold {
        thr.lock().unwrap_or_else(|p| p.into_inner()).outstanding -= 1;
    }
    if matches!(next, Next::Expired(_)) {
        inner.metrics.shed_expired[ctx.class as usize].fetch_add(1, Ordering::Relaxed);
        ctx.answer(Err(JobError::expired(ctx, Stage::Device)));
    } else {
        inner.metrics.cancelled[ctx.class as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Partials one request to a participant carries at most: enough that its HTTPS round trip is
/// a small share of each, few enough that one answer does not hold the first of them long.
pub(super) const PARTIAL_BATCH: usize = 32;

/// The jobs queued right behind `first` on participant `d` that sign the same message in the
/// same class, for other keys, up to [`PARTIAL_BATCH`] with it: they ride in `first`'s request,
/// in the profile's batch form, on `first`'s session. Only what is queued now: nothing waits
/// for a batch to fill. None for a block, or a message many keys do not sign alike.
fn take_alike_partials(
    inner: &Inner,
    st: &mut State,
    d: usize,
    first: &Ctx,
    now: Instant,
    allow_background: bool,
) -> Vec<(Arc<Ctx>, usize)> {
    let mut alike: Vec<(Arc<Ctx>, usize)> = Vec::new();
    if first.class == Class::Block || !first.request.as_ref().is_some_and(|f| f.shared) {
        return alike;
    }
    while alike.len() + 1 < PARTIAL_BATCH {
        match st.dev_q[d].pop(now, allow_background) {
            Next::Run(DevTask(ctx, share))
                if ctx.class == first.class
                    && ctx.root == first.root
                    && ctx.request.as_ref().is_some_and(|f| f.shared)
                    && ctx.key.pubkey != first.key.pubkey
                    && alike.iter().all(|(c, _)| c.key.pubkey != ctx.key.pubkey) =>
            {
                st.waiting -= 1;
                alike.push((ctx, share));
            }
            Next::Run(task) => {
                st.dev_q[d].push_front(task);
                break;
            }
            Next::Idle => break,
            next => clear_unstarted(inner, st, next),
        }
    }
    alike
}

/// Ask participant `d` for the partials of `jobs` (one message, several keys: see
/// [`take_alike_partials`]) in one request, on the one session they hold, and settle each.
fn ask_participant_batch(inner: &Arc<Inner>, d: usize, blocks: bool, jobs: Vec<(Arc<Ctx>, usize)>) {
    let station = &inner.stations[d];
    for (ctx, _) in &jobs {
        inner.metrics.queue_wait[ctx.class as usize].observe(ctx.enqueued.elapsed());
    }
    let started = Instant::now();
    let outcomes = operate_batch(station, &jobs);
    let took = started.elapsed();
    inner.metrics.device_op.get(station.name()).observe(took);

    let mut st = inner.lock();
    st.dev_busy[d] -= 1;
    if jobs
        .first()
        .is_some_and(|(ctx, _)| ctx.class == Class::Background)
    {
        st.dev_busy_background[d] -= 1;
    }
    if !inner.config.fifo && !blocks && matches!(st.dev_q[d].head(), Some((Class::Block, _))) {
        inner.block_cv[d].notify_one();
    }
    let mut inline = Vec::new();
    for ((ctx, share_index), opened) in jobs.into_iter().zip(outcomes) {
        if let Some(task) = settle_share(inner, &mut st, station, &ctx, share_index, opened, took) {
            inline.push((ctx, task));
        }
    }
    drop(st);
    // Blocks never ride in a batch; this only keeps [`settle_share`]'s contract.
    for (ctx, task) in inline {
        if still_wanted(inner, &ctx, Stage::Device) {
            combine_threshold(inner, task);
        }
    }
}

/// What share `share_index` of threshold job `ctx` got from `station` (`took` to get): kept
/// until t are in, then one CPU task; or the station excluded and another asked. Returns the
/// CPU task when it is a block's, to be combined by the caller where it stands once the
/// state's lock is released.
fn settle_share(
    inner: &Inner,
    st: &mut State,
    station: &Station,
    ctx: &Arc<Ctx>,
    share_index: usize,
    opened: Result<Opened, JobError>,
    took: std::time::Duration,
) -> Option<CpuTask> {
    let thr = ctx.threshold.as_ref()?;
    let mut job = thr.lock().unwrap_or_else(|p| p.into_inner());
    job.outstanding -= 1;
    // Only the t-th share becomes a CPU task; the others free a place ahead of the CPU.
    if !(opened.is_ok() && !job.combining && job.collected.len() + 1 == job.key.threshold) {
        inner.wake_a_device(st);
    }
    match opened {
        Ok(secret) if !job.combining && job.collected.len() < job.key.threshold => {
            job.collected.push((share_index, secret));
            if job.collected.len() == job.key.threshold {
                job.combining = true;
                let task = CpuTask {
                    ctx: ctx.clone(),
                    secrets: std::mem::take(&mut job.collected),
                    queued_at: Instant::now(),
                };
                drop(job);
                if ctx.class == Class::Block && !inner.config.fifo {
                    return Some(task);
                }
                if ctx.class != Class::Block {
                    st.cpu_buffered += 1;
                }
                st.cpu_q.push(task);
                inner.notify_cpu();
            }
        }
        // A hedged extra that came back after t others: not needed, wiped on drop.
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(holder = %station.name(), validator = %ctx.key.pubkey, error = %e, "share unavailable; asking another device or participant");
            job.excluded.push(share_index);
            job.failures.push(e.to_string());
            inner
                .metrics
                .share_failures
                .get(station.name())
                .observe(took);
            inner.top_up(st, ctx, &mut job);
        }
    }
    None
}

/// A participant asked for a job that does not carry the signing request to forward.
fn no_request(p: &crate::participants::Participant) -> JobError {
    JobError::Unavailable(format!(
        "participant {} needs the signing request, which this job lacks",
        p.name()
    ))
}

/// The remote share of `ctx`'s key at share index `i`.
fn remote_share(ctx: &Ctx, i: usize) -> Result<&crate::keys::RemoteShare, JobError> {
    i.checked_sub(ctx.key.shares.len())
        .and_then(|r| ctx.key.remote.get(r))
        .ok_or_else(|| JobError::Failed(SignerError::Internal(format!("no remote share {i}"))))
}

/// [`operate`] for jobs that ask one participant for one message's partials: one request, an
/// outcome per job in order.
fn operate_batch(station: &Station, jobs: &[(Arc<Ctx>, usize)]) -> Vec<Result<Opened, JobError>> {
    let Station::Participant(p) = station else {
        return jobs
            .iter()
            .map(|(ctx, i)| operate(station, ctx, *i))
            .collect();
    };
    let Some((first, _)) = jobs.first() else {
        return Vec::new();
    };
    let Some(request) = first.request.as_ref() else {
        return jobs.iter().map(|_| Err(no_request(p))).collect();
    };
    let mut outcomes: Vec<Option<Result<Opened, JobError>>> = Vec::with_capacity(jobs.len());
    let mut items = Vec::with_capacity(jobs.len());
    for (ctx, i) in jobs {
        match remote_share(ctx, *i) {
            Ok(share) => {
                items.push((ctx.key.pubkey, share.id));
                outcomes.push(None);
            }
            Err(e) => outcomes.push(Some(Err(e))),
        }
    }
    let deadline = jobs
        .iter()
        .map(|(ctx, _)| ctx.deadline)
        .min()
        .unwrap_or(first.deadline);
    let asked = if items.is_empty() {
        Vec::new()
    } else {
        p.partials(&items, &request.body, &first.root, deadline)
    };
    let mut asked = asked.into_iter();
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| match asked.next() {
                Some(Ok(sig)) => Ok(Opened::Partial(sig)),
                Some(Err(e)) => Err(JobError::Unavailable(e.to_string())),
                None => Err(JobError::Failed(SignerError::Internal(
                    "a batch answered fewer partials than it asked".into(),
                ))),
            })
        })
        .collect()
}

/// A station's operation for one share: a device opens the envelope (THE decrypt of the
/// decrypt-then-sign, `keys`: the secret exists from here only in a key that wipes itself when
/// dropped); a participant is asked for its partial, the request forwarded as the client sent
/// it, waiting no longer than the job's deadline.
fn operate(station: &Station, ctx: &super::Ctx, i: usize) -> Result<Opened, JobError> {
    match station {
        Station::Device(device) => {
            let share = ctx.key.shares.get(i).ok_or_else(|| {
                JobError::Failed(SignerError::Internal(format!("no local share {i}")))
            })?;
            in_stage(MetricStage::Device, || {
                crate::keys::open_share(device, &ctx.key.pubkey, share)
            })
            .map(Opened::Secret)
            .map_err(JobError::from)
        }
        Station::Participant(p) => {
            let share = remote_share(ctx, i)?;
            let request = ctx.request.as_ref().ok_or_else(|| no_request(p))?;
            p.partial(
                &ctx.key.pubkey,
                &request.body,
                share.id,
                &ctx.root,
                ctx.deadline,
            )
            .map(Opened::Partial)
            .map_err(|e| JobError::Unavailable(e.to_string()))
        }
    }
}

/// Take the next job only if it is a block (expired and cancelled jobs are cleared as usual).
/// Used by the devices' block threads (and, priorities off, while opened envelopes are backed
/// up waiting for a CPU).
pub(super) fn pop_blocks_only<T: Queued>(q: &mut ClassQueues<T>, now: Instant) -> Next<T> {
    match q.pop(now, false) {
        Next::Run(t) if t.class() != Class::Block => {
            q.push_front(t);
            Next::Idle
        }
        other => other,
    }
}

/// One CPU worker. A bulk worker takes the highest class first (blocks never come here with
/// priorities on: their device's block thread signs them); the rescue worker (one per
/// scheduler, at normal priority) takes bulk work only when the bulk workers are starved.
/// Priorities off (the FIFO baseline), every job comes here.
pub(super) fn cpu_worker(inner: Arc<Inner>, rescue: bool) {
    let cv = if rescue {
        &inner.rescue_cv
    } else {
        &inner.cpu_cv
    };
    loop {
        let (task, wake) = {
            let mut st = inner.lock();
            loop {
                if st.shutdown {
                    return;
                }
                let now = Instant::now();
                let next = if rescue {
                    rescue_starved(&inner, &mut st, now)
                } else if st.bulk_paused {
                    Next::Idle
                } else {
                    // A block signed here would run at the bulk threads' low priority.
                    st.cpu_q.pop_except_blocks(now, true)
                };
                let task = match next {
                    // Rescuing, the rescue worker is woken for bulk work until `rescue_until`;
                    // otherwise nobody wakes it for bulk work, so it looks again in time to
                    // find a bulk task starved (a few wake-ups a second, idle or not).
                    Next::Idle if rescue => {
                        let wait = st.rescue_until.map_or(inner.config.starved_after / 2, |t| {
                            t.saturating_duration_since(now)
                        });
                        st = cv.wait_timeout(st, wait);
                        continue;
                    }
                    Next::Idle => {
                        st = cv.wait(st);
                        continue;
                    }
                    Next::Run(t) | Next::Expired(t) | Next::Cancelled(t) => t,
                };
                // The place freed in the CPU buffer goes to a device thread, woken once the lock
                // is released: a thread woken under it would preempt this one (a bulk worker,
                // at the lowest OS priority) while it holds the lock, and every other thread,
                // a block's included, would wait until the OS let this one run again.
                let wake = if task.ctx.class != Class::Block {
                    st.cpu_buffered -= 1;
                    inner.device_to_wake(&st)
                } else {
                    None
                };
                // Re-classify outside the match so the counters above stay in one place.
                if still_wanted(&inner, &task.ctx, Stage::Cpu) {
                    break (task, wake);
                }
                if let Some(cv) = wake {
                    cv.notify_one();
                }
            }
        };
        if let Some(cv) = wake {
            cv.notify_one();
        }
        if holds_remote_partials(&task) {
            let batch = take_alike(&inner, task, holds_remote_partials);
            combine_remote_batch(&inner, batch);
            continue;
        }
        if holds_local_shares(&task) {
            let batch = take_alike(&inner, task, holds_local_shares);
            combine_local_batch(&inner, batch);
            continue;
        }
        if task.ctx.threshold.is_some() {
            combine_threshold(&inner, task);
            continue;
        }
        let started = Instant::now();
        let result = match task.secrets.first() {
            Some((_, Opened::Secret(secret))) => Ok(in_stage(MetricStage::Sign, || {
                crate::keys::sign_opened_hashed(secret, &inner.hashed.get(&task.ctx.root))
            })),
            _ => Err(JobError::Failed(SignerError::Internal(
                "no share opened".into(),
            ))),
        };
        inner.pace.observe_sign(started.elapsed());
        drop(task.secrets);
        task.ctx.answer(result);
    }
}

/// Threshold combinations verified in one batch, at most: enough that the final
/// exponentiation and the batch's bookkeeping are a small share of each, few enough that the
/// first of them waits a few milliseconds at most.
const COMBINE_BATCH: usize = 16;

/// `first` and the tasks of its class behind it in the CPU queue that are `alike` too (hold
/// participants' partials, or t shares opened here), up to [`COMBINE_BATCH`], to verify
/// together. They are queued only while the CPU is behind, so an idle signer combines each
/// alone, as it comes.
fn take_alike(inner: &Inner, first: CpuTask, alike: fn(&CpuTask) -> bool) -> Vec<CpuTask> {
    let class = first.ctx.class;
    let mut batch = vec![first];
    if class == Class::Block {
        return batch;
    }
    let mut wakes = Vec::new();
    let mut st = inner.lock();
    let now = Instant::now();
    while batch.len() < COMBINE_BATCH {
        let task = match st.cpu_q.pop_except_blocks(now, true) {
            Next::Idle => break,
            Next::Run(t) if t.ctx.class != class || !alike(&t) => {
                st.cpu_q.push_front(t);
                break;
            }
            Next::Run(t) | Next::Expired(t) | Next::Cancelled(t) => t,
        };
        if task.ctx.class != Class::Block {
            st.cpu_buffered -= 1;
            wakes.extend(inner.device_to_wake(&st));
        }
        if still_wanted(inner, &task.ctx, Stage::Cpu) {
            batch.push(task);
        }
    }
    drop(st);
    for cv in wakes {
        cv.notify_one();
    }
    batch
}

/// For the rescue worker: the next bulk task if the bulk workers are starved. They are once a
/// task has waited `starved_after` for them (when they run, they take work within
/// microseconds); the rescue worker then takes every bulk task as it comes for
/// ten times that long, and longer while it keeps finding tasks that old.
pub(super) fn rescue_starved(inner: &Inner, st: &mut State, now: Instant) -> Next<CpuTask> {
    if st.rescue_until.is_some_and(|t| t <= now) {
        st.rescue_until = None;
        inner.rescuing.store(false, Ordering::Relaxed);
    }
    match st.cpu_q.pop_except_blocks(now, true) {
        Next::Run(t) => {
            let starved = now.duration_since(t.queued_at) >= inner.config.starved_after;
            if !starved && st.rescue_until.is_none() {
                st.cpu_q.push_front(t);
                return Next::Idle;
            }
            if starved {
                st.rescue_until = Some(now + 10 * inner.config.starved_after);
                inner.rescuing.store(true, Ordering::Relaxed);
            }
            inner.metrics.starved_rescued[t.ctx.class as usize].fetch_add(1, Ordering::Relaxed);
            Next::Run(t)
        }
        other => other,
    }
}

/// False (counted, and answered if it expired) when a job's client went away or its deadline
/// passed while it waited (at `stage`).
pub(super) fn still_wanted(inner: &Inner, ctx: &Ctx, stage: Stage) -> bool {
    if ctx.gone() {
        inner.metrics.cancelled[ctx.class as usize].fetch_add(1, Ordering::Relaxed);
        return false;
    }
    if ctx.deadline <= Instant::now() {
        inner.metrics.shed_expired[ctx.class as usize].fetch_add(1, Ordering::Relaxed);
        ctx.answer(Err(JobError::expired(ctx, stage)));
        return false;
    }
    true
}

/// Sign a whole key's job with its opened secret where it stands (a device thread, for a
/// block), unless its client went away or its deadline passed meanwhile.
pub(super) fn sign_whole(inner: &Inner, ctx: &Ctx, secret: &SecretKey) {
    if still_wanted(inner, ctx, Stage::Device) {
        ctx.answer(Ok(in_stage(MetricStage::Sign, || {
            crate::keys::sign_opened_hashed(secret, &inner.hashed.get(&ctx.root))
        })));
    }
}
