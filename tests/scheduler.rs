//! The device-aware queue on real SoftHSM tokens. Devices get the simulated-latency profile
//! option so that "every session is busy" is a state we can create; assertions are about order,
//! counters and queue state, never about elapsed time.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Signer;
use hsm_signer::devices::Devices;
use hsm_signer::keys::{self, KeyRecord, KeyStore};
use hsm_signer::scheduler::SchedulerMetrics as Metrics;
use hsm_signer::scheduler::{Class, JobError, Limit, Scheduler, SchedulerConfig, SignJob, Stage};

struct Fixture {
    _signer: Signer,
    scheduler: Scheduler,
    device: Arc<hsm::Device>,
    keys: Vec<Arc<KeyRecord>>,
}

/// A test that fails while the device is held must report, not hang joining a held thread.
impl Drop for Fixture {
    fn drop(&mut self) {
        self.device.hold(false);
    }
}

/// One SoftHSM device with `sessions` sessions and `latency` per operation, `n` keys on it.
fn fixture(sessions: usize, latency_ms: u64, n: usize, config: SchedulerConfig) -> Fixture {
    let signer = Signer::new();
    let (cfg, devices) = signer.open();
    let mut store = KeyStore::load_strict(&cfg.keys_dir()).unwrap();
    let pks = keys::generate(&mut store, &devices, "softhsm-1", n).unwrap();
    let mut dev_cfg = cfg.device("softhsm-1").unwrap().hsm.clone();
    dev_cfg.max_sessions = sessions;
    dev_cfg.simulated_latency = (latency_ms > 0).then(|| Duration::from_millis(latency_ms));
    let device = Arc::new(hsm::Device::open(dev_cfg).unwrap());
    let scheduler = Scheduler::with_config(
        Devices::from_open(vec![device.clone()]),
        config,
        Arc::new(Metrics::default()),
    );
    let keys = pks
        .iter()
        .map(|pk| store.get(pk).unwrap().clone())
        .collect();
    Fixture {
        _signer: signer,
        scheduler,
        device,
        keys,
    }
}

fn job(key: &Arc<KeyRecord>, class: Class, i: u8) -> SignJob {
    SignJob {
        arrived: None,
        key: key.clone(),
        signing_root: hsm_signer::consensus::SigningRoot([i; 32]),
        class,
        deadline: None,
        freshness: 0,
        request: None,
    }
}

/// Sign `[fill; 32]` with `key` in the background; the task panics unless the signature
/// verifies under the key.
fn spawn_verified(
    f: &Fixture,
    key: &Arc<KeyRecord>,
    class: Class,
    fill: u8,
) -> tokio::task::JoinHandle<()> {
    let (s, k) = (f.scheduler.clone(), key.clone());
    tokio::spawn(async move {
        let sig = s.sign(job(&k, class, fill)).await.unwrap();
        assert!(hsm_signer::bls::verify(&k.pubkey.0, &[fill; 32], &sig));
    })
}

/// Wait (bounded) until `cond` holds: a state condition, not a timing assertion.
async fn until(mut cond: impl FnMut() -> bool) {
    let limit = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < limit, "condition never reached");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Queues 20 attestations on a 2-session device, then a block while both sessions are held
/// busy; returns the block's position in the completion order.
async fn block_position(fifo: bool) -> usize {
    let f = fixture(
        2,
        30,
        2,
        SchedulerConfig {
            fifo,
            cpu_workers: 1,
            cpu_buffer: Some(2),
            ..Default::default()
        },
    );
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // Held: two attestations take both sessions and stay there until the block is queued.
    f.device.hold(true);
    for i in 0..20u8 {
        let (s, k, o) = (f.scheduler.clone(), f.keys[0].clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            s.sign(job(&k, Class::Attestation, i)).await.unwrap();
            o.lock().unwrap().push("attestation");
        }));
    }
    let s = f.scheduler.clone();
    until(|| s.sessions_in_use()[0].1 == 2 && s.queued().0 == 18).await;
    let (s, k, o) = (f.scheduler.clone(), f.keys[1].clone(), order.clone());
    tasks.push(tokio::spawn(async move {
        s.sign(job(&k, Class::Block, 99)).await.unwrap();
        o.lock().unwrap().push("block");
    }));
    let s = f.scheduler.clone();
    until(|| s.queued().0 == 19).await;
    f.device.hold(false);
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap();
    assert_eq!(order.len(), 21);
    order.iter().position(|x| *x == "block").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_session_busy_a_new_block_runs_next() {
    // Ours: the block waits only for the operations already in flight.
    let pos = block_position(false).await;
    assert!(pos <= 3, "block finished {pos}th of 21");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fifo_baseline_puts_the_block_behind_the_herd() {
    // Same code path, priorities off: the contrast that makes the test above meaningful.
    let pos = block_position(true).await;
    assert!(pos >= 18, "FIFO block finished {pos}th of 21");
}

/// A backlog of slot 10's attestations waits on a held one-session device, then slot 11's
/// arrive; returns the slots in the order they were signed.
async fn slots_in_signing_order(fifo: bool) -> Vec<u64> {
    let f = fixture(
        1,
        20,
        1,
        SchedulerConfig {
            fifo,
            cpu_workers: 1,
            cpu_buffer: Some(1),
            ..Default::default()
        },
    );
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let spawn = |tasks: &mut Vec<_>, slot: u64, i: u8| {
        let (s, k, o) = (f.scheduler.clone(), f.keys[0].clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let job = SignJob {
                freshness: slot,
                ..job(&k, Class::Attestation, i)
            };
            s.sign(job).await.unwrap();
            o.lock().unwrap().push(slot);
        }));
    };
    f.device.hold(true);
    spawn(&mut tasks, 9, 0);
    let s = f.scheduler.clone();
    until(|| s.sessions_in_use()[0].1 == 1).await;
    for i in 1..=4 {
        spawn(&mut tasks, 10, i);
    }
    until(|| s.queued().0 == 4).await;
    for i in 5..=8 {
        spawn(&mut tasks, 11, i);
    }
    until(|| s.queued().0 == 8).await;
    f.device.hold(false);
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_overload_the_newer_slot_goes_before_the_older_backlog() {
    assert_eq!(
        slots_in_signing_order(false).await,
        [9, 11, 11, 11, 11, 10, 10, 10, 10]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fifo_baseline_signs_the_older_backlog_first() {
    // Same code path, priorities off: the contrast that makes the test above meaningful.
    assert_eq!(
        slots_in_signing_order(true).await,
        [9, 10, 10, 10, 10, 11, 11, 11, 11]
    );
}

/// Every bulk CPU worker is held (a state, not a race) with 3 opened attestations waiting for
/// a core; then a block arrives. Returns the scheduler and the pending tasks.
async fn cores_held_then_a_block(
    fifo: bool,
) -> (
    Fixture,
    tokio::task::JoinHandle<Result<blst::min_pk::Signature, JobError>>,
    Vec<tokio::task::JoinHandle<Result<blst::min_pk::Signature, JobError>>>,
) {
    let f = fixture(
        4,
        0,
        2,
        SchedulerConfig {
            fifo,
            cpu_workers: 2,
            // The held attestations must stay queued: no rescue.
            starved_after: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    f.scheduler.pause_bulk_cpu(true);
    let mut herd = Vec::new();
    for i in 0..3u8 {
        let (s, k) = (f.scheduler.clone(), f.keys[0].clone());
        herd.push(tokio::spawn(async move {
            s.sign(job(&k, Class::Attestation, i)).await
        }));
    }
    let s = f.scheduler.clone();
    until(|| s.queued() == (0, 3)).await;
    let (s, k) = (f.scheduler.clone(), f.keys[1].clone());
    let block = tokio::spawn(async move { s.sign(job(&k, Class::Block, 99)).await });
    (f, block, herd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_is_signed_even_while_every_bulk_cpu_worker_is_busy() {
    let (f, block, herd) = cores_held_then_a_block(false).await;
    let sig = tokio::time::timeout(Duration::from_secs(20), block)
        .await
        .expect("the block was never signed")
        .unwrap()
        .unwrap();
    let pk = blst::min_pk::PublicKey::from_bytes(&f.keys[1].pubkey.0).unwrap();
    assert_eq!(
        sig.verify(true, &[99; 32], hsm_signer::bls::DST, &[], &pk, true),
        blst::BLST_ERROR::BLST_SUCCESS
    );
    assert_eq!(f.scheduler.queued(), (0, 3), "the attestations still wait");
    f.scheduler.pause_bulk_cpu(false);
    for t in herd {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_priorities_a_block_waits_for_a_busy_cpu_worker() {
    // The FIFO baseline has no block threads: the contrast that makes the test above mean
    // something. The block is opened and then waits for a core like everything else.
    let (f, block, herd) = cores_held_then_a_block(true).await;
    let s = f.scheduler.clone();
    until(|| s.queued() == (0, 4)).await;
    assert!(!block.is_finished());
    f.scheduler.pause_bulk_cpu(false);
    block.await.unwrap().unwrap();
    for t in herd {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_work_the_bulk_workers_never_take_is_signed_by_the_rescue_worker() {
    // Held bulk workers stand for bulk workers starved by other load on the host.
    let f = fixture(
        4,
        0,
        2,
        SchedulerConfig {
            cpu_workers: 2,
            starved_after: Duration::from_millis(20),
            ..Default::default()
        },
    );
    f.scheduler.pause_bulk_cpu(true);
    let mut tasks = Vec::new();
    for (i, class) in [Class::Attestation, Class::Aggregate, Class::Background]
        .into_iter()
        .cycle()
        .take(12)
        .enumerate()
    {
        tasks.push(spawn_verified(&f, &f.keys[i % 2], class, i as u8));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("a starved job was never signed")
            .unwrap();
    }
    assert_eq!(f.scheduler.metrics().starved_rescued_total(), 12);
    assert_eq!(f.scheduler.queued(), (0, 0));
}

/// Busy loops in other processes, killed when dropped.
struct Hogs(Vec<std::process::Child>);

impl Hogs {
    fn start(n: usize) -> Hogs {
        Hogs(
            (0..n)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// 40 attestations due by `deadline`; how many were signed.
async fn forty_attestations(f: &Fixture, deadline: Instant) -> usize {
    let mut tasks = Vec::new();
    for i in 0..40u8 {
        let (s, k) = (f.scheduler.clone(), f.keys[usize::from(i) % 2].clone());
        let job = SignJob {
            deadline: Some(deadline),
            freshness: 0,
            ..job(&k, Class::Attestation, i)
        };
        tasks.push(tokio::spawn(async move { s.sign(job).await }));
    }
    let mut signed = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            signed += 1;
        }
    }
    signed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestations_are_signed_while_other_processes_take_every_core() {
    // The real thing: busy processes at normal priority on every core (twice over), against
    // bulk workers at SCHED_IDLE. Without the rescue worker they get next to nothing
    // and most attestations miss their deadline (measured: 40 took about 7 s).
    let f = fixture(4, 0, 2, SchedulerConfig::default());
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs = Hogs::start(2 * cores);
    // One slot's worth of patience (the spec wants an attestation a third of a slot in).
    let signed = forty_attestations(&f, Instant::now() + Duration::from_secs(3)).await;
    drop(hogs);
    assert_eq!(signed, 40, "attestations expired while the host was busy");
    assert!(f.scheduler.metrics().starved_rescued_total() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_work_never_holds_the_last_session() {
    let f = fixture(3, 10, 1, SchedulerConfig::default());
    let mut tasks = Vec::new();
    for i in 0..40u8 {
        let (s, k) = (f.scheduler.clone(), f.keys[0].clone());
        let class = if i % 4 == 0 {
            Class::Attestation
        } else {
            Class::Background
        };
        tasks.push(tokio::spawn(async move { s.sign(job(&k, class, i)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = f.scheduler.stats();
    let bg = stats.peak_background_busy[0].load(std::sync::atomic::Ordering::SeqCst);
    let all = stats.peak_device_busy[0].load(std::sync::atomic::Ordering::SeqCst);
    assert!(bg <= 2, "background held {bg} of 3 sessions");
    assert!(bg >= 1, "background did run");
    assert!(all <= 3);
}

/// Sixty attestations on a slow device (100 ms per operation, 8 sessions) with one CPU worker.
/// Returns the most operations ever in flight, and the CPU buffer's limit at the end.
async fn slow_device_in_flight(cpu_buffer: Option<usize>) -> (usize, usize) {
    let config = SchedulerConfig {
        cpu_workers: 1,
        cpu_buffer,
        ..Default::default()
    };
    let f = fixture(8, 100, 4, config);
    let tasks: Vec<_> = (0..60u8)
        .map(|i| spawn_verified(&f, &f.keys[i as usize % 4], Class::Attestation, i))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let peak = f.scheduler.stats().peak_device_busy[0].load(std::sync::atomic::Ordering::SeqCst);
    (peak, f.scheduler.cpu_buffer_limit())
}

/// The envelopes opened ahead of the CPU include those being opened: a fixed buffer of 2 keeps
/// at most 2 operations in flight, whatever the sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_buffer_counts_envelopes_being_opened() {
    let (peak, limit) = slow_device_in_flight(Some(2)).await;
    assert!(peak <= 2, "{peak} operations in flight with a buffer of 2");
    assert_eq!(limit, 2);
}

/// Sized by default to the measured device time (100 ms here, against well under 25 ms a
/// signature), the buffer grows to its ceiling of two per worker plus every session, and a slow
/// device gets all its sessions used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_cpu_buffer_grows_with_device_latency_until_every_session_is_used() {
    let (peak, limit) = slow_device_in_flight(None).await;
    assert_eq!(
        limit,
        2 + 8,
        "the adaptive buffer did not reach its ceiling"
    );
    assert_eq!(peak, 8, "the slow device's sessions were not all used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cap_holds_under_1000_concurrent_jobs() {
    let f = fixture(4, 0, 8, SchedulerConfig::default());
    let mut tasks = Vec::new();
    for i in 0..1000usize {
        tasks.push(spawn_verified(
            &f,
            &f.keys[i % 8],
            Class::ALL[i % 5],
            (i % 251) as u8,
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let peak = f.scheduler.stats().peak_device_busy[0].load(std::sync::atomic::Ordering::SeqCst);
    assert!(peak <= 4, "scheduler had {peak} operations in flight");
    assert!(
        f.device.pool_stats().peak_in_use <= 4,
        "{:?}",
        f.device.pool_stats()
    );
    assert_eq!(f.scheduler.queued(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_sheds_the_lowest_class_first_then_refuses() {
    use std::sync::atomic::Ordering::SeqCst;
    // Two sessions, held: nothing finishes while the test fills the queue.
    let f = fixture(
        2,
        0,
        1,
        SchedulerConfig {
            queue_capacity: 3,
            ..Default::default()
        },
    );
    f.device.hold(true);
    let k = f.keys[0].clone();
    let shed_bg =
        |s: &Scheduler| s.metrics().shed_overload[Class::Background as usize].load(SeqCst);
    // bg0 takes one session; bg1..bg3 wait (background never takes the last session): full.
    let mut bg = Vec::new();
    for i in 0..4u8 {
        let (s, k) = (f.scheduler.clone(), k.clone());
        bg.push(tokio::spawn(async move {
            s.sign(job(&k, Class::Background, i)).await
        }));
        // bg0 on the device (not merely queued: a slow thread wake-up on a loaded machine
        // would leave four jobs queued and the fourth refused), the others queued behind it.
        let s = f.scheduler.clone();
        until(|| s.sessions_in_use()[0].1 == 1 && s.queued().0 == usize::from(i)).await;
    }
    assert_eq!(f.scheduler.queued().0, 3);
    // A block sheds the newest background job and takes the free session.
    let (s, k2) = (f.scheduler.clone(), k.clone());
    let block = tokio::spawn(async move { s.sign(job(&k2, Class::Block, 50)).await });
    let s = f.scheduler.clone();
    until(|| shed_bg(&s) == 1 && s.sessions_in_use()[0].1 == 2).await;
    // Three attestations: the first fits, the next two each shed a background job.
    let mut att = Vec::new();
    for i in 0..3u8 {
        let (s, k) = (f.scheduler.clone(), k.clone());
        att.push(tokio::spawn(async move {
            s.sign(job(&k, Class::Attestation, 60 + i)).await
        }));
        let s = f.scheduler.clone();
        let want = [1, 2, 3][usize::from(i)];
        until(|| shed_bg(&s) == want && s.queued().0 == 3).await;
    }
    // Nothing lower is left to shed: the next attestation is refused.
    let refused = f.scheduler.sign(job(&k, Class::Attestation, 70)).await;
    assert!(
        matches!(refused, Err(JobError::Overloaded(_))),
        "{refused:?}"
    );
    assert_eq!(
        f.scheduler.metrics().shed_overload[Class::Attestation as usize].load(SeqCst),
        1
    );

    f.device.hold(false);
    assert!(block.await.unwrap().is_ok());
    for a in att {
        assert!(a.await.unwrap().is_ok());
    }
    let outcomes: Vec<_> = futures_join(bg).await;
    assert_eq!(
        outcomes.iter().filter(|r| r.is_ok()).count(),
        1,
        "only the background job in flight ran"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|r| matches!(r, Err(JobError::Overloaded(_))))
            .count(),
        3
    );
}

async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_job_is_refused_and_never_reaches_the_device() {
    let f = fixture(1, 0, 1, SchedulerConfig::default());
    let k = f.keys[0].clone();
    // A deadline already past: refused at once.
    let past = SignJob {
        deadline: Some(Instant::now()),
        ..job(&k, Class::Attestation, 1)
    };
    assert!(matches!(
        f.scheduler.sign(past).await,
        Err(JobError::Expired {
            stage: Stage::Submitted,
            ..
        })
    ));

    // A deadline that passes while it waits behind a busy (held) session.
    let (ops_before, _) = f.device.op_counts();
    f.device.hold(true);
    let (s, k1) = (f.scheduler.clone(), k.clone());
    let busy = tokio::spawn(async move { s.sign(job(&k1, Class::Block, 2)).await });
    let s = f.scheduler.clone();
    until(|| s.sessions_in_use()[0].1 == 1).await;
    let deadline = Instant::now() + Duration::from_millis(5);
    let short = SignJob {
        deadline: Some(deadline),
        ..job(&k, Class::Attestation, 3)
    };
    let s = f.scheduler.clone();
    let short = tokio::spawn(async move { s.sign(short).await });
    let s = f.scheduler.clone();
    until(|| s.queued().0 == 1 && Instant::now() > deadline).await;
    f.device.hold(false);
    let refused = short.await.unwrap();
    assert!(
        matches!(
            refused,
            Err(JobError::Expired {
                stage: Stage::Device,
                limit: Limit::Deadline,
                ..
            })
        ),
        "{refused:?}"
    );
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains("for a device session, past the end of its validity window")
            && message.contains("because the devices were busy")
            && message.ends_with("nothing was signed"),
        "{message}"
    );
    assert!(busy.await.unwrap().is_ok());
    let (ops_after, _) = f.device.op_counts();
    assert_eq!(
        ops_after - ops_before,
        1,
        "only the block touched the device"
    );
    assert_eq!(
        f.scheduler.metrics().shed_expired[Class::Attestation as usize]
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_client_went_away_frees_its_place_and_is_not_run() {
    let f = fixture(1, 0, 1, SchedulerConfig::default());
    let k = f.keys[0].clone();
    let (ops_before, _) = f.device.op_counts();
    f.device.hold(true);
    let (s, k1) = (f.scheduler.clone(), k.clone());
    let busy = tokio::spawn(async move { s.sign(job(&k1, Class::Attestation, 1)).await });
    let s = f.scheduler.clone();
    until(|| s.sessions_in_use()[0].1 == 1).await;
    let (s, k2) = (f.scheduler.clone(), k.clone());
    let abandoned = tokio::spawn(async move { s.sign(job(&k2, Class::Attestation, 2)).await });
    let s = f.scheduler.clone();
    until(|| s.queued().0 == 1).await;
    abandoned.abort();
    let _ = abandoned.await;
    assert_eq!(
        f.scheduler.queued().0,
        0,
        "the abandoned job left the queue at once"
    );
    f.device.hold(false);
    assert!(busy.await.unwrap().is_ok());
    let (ops_after, _) = f.device.op_counts();
    assert_eq!(ops_after - ops_before, 1);
    assert_eq!(
        f.scheduler.metrics().cancelled[Class::Attestation as usize]
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

/// The scheduling policy of this process's threads named `name` (from /proc: `SCHED_OTHER` 0,
/// `SCHED_FIFO` 1, `SCHED_IDLE` 5).
fn thread_policies(name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the command name, which ends with the last ')': state is field 3, the
        // policy field 41.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        out.push(rest.split(' ').nth(41 - 3).unwrap().parse().unwrap());
    }
    out
}

/// Whether this process may use real-time priorities: `CAP_SYS_NICE` (bit 23) or an
/// `RLIMIT_RTPRIO` of at least 1.
fn may_use_realtime() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let rtprio = limits
        .lines()
        .find(|l| l.starts_with("Max realtime priority"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    cap_eff & (1 << 23) != 0 || rtprio >= 1
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_block_thread_runs_at_real_time_priority_where_the_host_allows_it() {
    let f = fixture(3, 0, 1, SchedulerConfig::default());
    // A block goes through it (and the thread is up).
    f.scheduler
        .sign(job(&f.keys[0], Class::Block, 7))
        .await
        .unwrap();
    // A thread names itself, then sets its policy, once it runs: wait for both.
    let expected = if may_use_realtime() { 1 } else { 0 };
    until(|| thread_policies("dev0-block") == vec![expected]).await;
    let sessions = || {
        (0..3)
            .flat_map(|w| thread_policies(&format!("dev0-{w}")))
            .collect::<Vec<_>>()
    };
    until(|| sessions().len() == 3).await;
    assert_eq!(
        sessions(),
        vec![0, 0, 0],
        "session threads at normal priority"
    );
    until(|| thread_policies("cpu-0") == vec![5]).await;
    // And they stay so: one block thread, SCHED_FIFO if allowed.
    assert_eq!(thread_policies("dev0-block"), vec![expected]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fifo_baseline_has_no_block_thread() {
    let fifo = fixture(
        3,
        0,
        1,
        SchedulerConfig {
            fifo: true,
            ..Default::default()
        },
    );
    fifo.scheduler
        .sign(job(&fifo.keys[0], Class::Block, 8))
        .await
        .unwrap();
    until(|| thread_policies("cpu-0").len() == 1).await;
    assert!(thread_policies("dev0-block").is_empty());
    assert_eq!(thread_policies("cpu-0"), vec![0], "OS priorities off too");
}

/// Hardening (issue 15, finding 5): `/healthcheck`'s device check is the scheduler's background
/// work. It runs only while the device has two sessions free or more, it is counted among the
/// device's sessions in use while it runs (so signing never exceeds the cap beside it), and
/// with one session free or none it is not run at all: the caller is told at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_check_takes_only_a_spare_session_and_counts_against_the_cap() {
    let f = fixture(3, 0, 1, SchedulerConfig::default());
    let probe = |s: &Scheduler| s.probe_device("softhsm-1", |d| d.check().is_ok());
    // Idle: checked, and the place is given back.
    assert_eq!(probe(&f.scheduler), Some(true));
    assert_eq!(f.scheduler.sessions_in_use()[0].1, 0);
    assert_eq!(f.scheduler.probe_device("no-such-device", |_| ()), None);

    // One attestation holds a session: two are free, so a check starts (and waits on the held
    // device, counted as the second session in use).
    f.device.hold(true);
    let mut tasks = vec![spawn_verified(&f, &f.keys[0], Class::Attestation, 1)];
    let s = f.scheduler.clone();
    until(|| s.sessions_in_use()[0].1 == 1).await;
    let s = f.scheduler.clone();
    let running = tokio::task::spawn_blocking(move || probe(&s));
    let s = f.scheduler.clone();
    until(|| s.sessions_in_use()[0].1 == 2).await;
    // One session free: another check is not run, and says so at once.
    assert_eq!(probe(&f.scheduler), None);
    // Two more attestations: one takes the last session, the other waits for a place, since
    // the check holds one.
    tasks.push(spawn_verified(&f, &f.keys[0], Class::Attestation, 2));
    tasks.push(spawn_verified(&f, &f.keys[0], Class::Attestation, 3));
    let s = f.scheduler.clone();
    until(|| s.sessions_in_use()[0].1 == 3 && s.queued().0 == 1).await;
    assert_eq!(probe(&f.scheduler), None);
    assert!(f.device.pool_stats().peak_in_use <= 3);

    f.device.hold(false);
    assert_eq!(running.await.unwrap(), Some(true));
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(f.scheduler.sessions_in_use()[0].1, 0);
    assert_eq!(probe(&f.scheduler), Some(true));
    let peak = f.scheduler.stats().peak_device_busy[0].load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        peak <= 3,
        "{peak} operations in flight on a 3-session device"
    );
}
