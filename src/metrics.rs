//! Prometheus primitives: atomic counters and fixed-bucket histograms, rendered in the text
//! exposition format. Lock-free on the hot path. Each service owns its metrics
//! (`scheduler::SchedulerMetrics`, `duties::PrecomputeMetrics`, `api::metrics`); `/metrics`
//! renders them all.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Bucket upper bounds in seconds.
const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Append this histogram as `name` with `labels` (`key="value",…`, or empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Histograms keyed by a label value, created on first use.
#[derive(Debug, Default)]
pub struct Family {
    by: RwLock<BTreeMap<String, Arc<Histogram>>>,
}

impl Family {
    /// The histogram for `label`. It is read on every device operation by many threads at
    /// once: a label seen before costs a shared lock and no allocation.
    pub fn get(&self, label: &str) -> Arc<Histogram> {
        if let Some(h) = self.by.read().unwrap_or_else(|p| p.into_inner()).get(label) {
            return h.clone();
        }
        let mut by = self.by.write().unwrap_or_else(|p| p.into_inner());
        by.entry(label.to_owned()).or_default().clone()
    }

    /// Append every histogram of the family as `name`, labelled `key="<label>"`.
    pub fn render(&self, out: &mut String, name: &str, key: &str) {
        for (label, h) in self.by.read().unwrap_or_else(|p| p.into_inner()).iter() {
            h.render(out, name, &format!("{key}=\"{label}\""));
        }
    }
}

/// Append a counter or gauge family `name` of `kind`, one line per (label value, count).
pub(crate) fn render_labelled<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    key: &str,
    values: impl IntoIterator<Item = (&'a str, &'a AtomicU64)>,
) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (value, n) in values {
        let _ = writeln!(
            out,
            "{name}{{{key}=\"{value}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
}

/// Append a summary without quantiles: `name_sum` (seconds) and `name_count`.
pub(crate) fn render_summary(out: &mut String, name: &str, sum: Duration, count: u64) {
    let _ = writeln!(
        out,
        "# TYPE {name} summary\n{name}_sum {}\n{name}_count {count}",
        sum.as_secs_f64()
    );
}

/// Append one unlabelled counter or gauge.
pub(crate) fn render_one(out: &mut String, name: &str, kind: &str, value: &AtomicU64) {
    let _ = writeln!(
        out,
        "# TYPE {name} {kind}\n{name} {}",
        value.load(Ordering::Relaxed)
    );
}

/// A stage of the request path whose CPU time is counted, on the thread that runs it, while
/// stage accounting is on ([`enable_stage_cpu`]: `[server] stage_cpu = true`; `bench http`
/// turns it on to name where a request's CPU goes). Off, a stage costs one relaxed load; on,
/// one in [`STAGE_SAMPLE_EVERY`] runs is timed.
/// Stages with threads of their own (slashing protection's writer) are told apart by thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// JSON to a typed request, and the network check.
    Parse,
    /// The signing root.
    Root,
    /// A device operation: the envelope opened on the token.
    Device,
    /// The BLS signature (or a threshold combination) on a CPU worker.
    Sign,
    /// The answer's body and headers.
    Response,
}

impl Stage {
    /// Every stage, in the order of the request path.
    pub const ALL: [Stage; 5] = [
        Stage::Parse,
        Stage::Root,
        Stage::Device,
        Stage::Sign,
        Stage::Response,
    ];

    /// Its `stage` label.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Parse => "parse",
            Stage::Root => "root",
            Stage::Device => "device",
            Stage::Sign => "sign",
            Stage::Response => "response",
        }
    }
}

struct StageCpu {
    on: std::sync::atomic::AtomicBool,
    nanos: [AtomicU64; Stage::ALL.len()],
    items: [AtomicU64; Stage::ALL.len()],
}

impl StageCpu {
    const fn new() -> StageCpu {
        StageCpu {
            on: std::sync::atomic::AtomicBool::new(false),
            nanos: [const { AtomicU64::new(0) }; Stage::ALL.len()],
            items: [const { AtomicU64::new(0) }; Stage::ALL.len()],
        }
    }

    /// Run `f`, counting one item of `stage` and, for one run in [`STAGE_SAMPLE_EVERY`], the
    /// calling thread's CPU time (scaled by [`STAGE_SAMPLE_EVERY`]) while accounting is on.
    #[inline]
    fn run<T>(&self, stage: Stage, f: impl FnOnce() -> T) -> T {
        if !self.on.load(Ordering::Relaxed) {
            return f();
        }
        let i = stage as usize;
        self.items[i].fetch_add(1, Ordering::Relaxed);
        if !stage_sampled(stage) {
            return f();
        }
        let before = thread_cpu();
        let out = f();
        let spent = thread_cpu().saturating_sub(before);
        let scaled = u64::try_from(spent.as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(STAGE_SAMPLE_EVERY));
        self.nanos[i].fetch_add(scaled, Ordering::Relaxed);
        out
    }
}

static STAGE_CPU: StageCpu = StageCpu::new();

/// Count CPU time per stage from now on, for the whole process.
pub fn enable_stage_cpu() {
    STAGE_CPU.on.store(true, Ordering::Relaxed);
}

/// The calling thread's CPU time so far.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Stage accounting times one in this many runs of a stage on each thread, and counts the
/// time of that one this many times over: an estimate of the stage's total CPU. Timing every
/// run took two `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` system calls a stage, some ten a
/// request, which on a saturated server lowered the very throughput and latency `bench http`
/// measures (two back-to-back pairs of runs: PostgreSQL `ATTESTATION` p99 21.4 and 20.1 ms
/// with every run timed, 19.1 and 18.6 with none).
pub const STAGE_SAMPLE_EVERY: u32 = 16;

thread_local! {
    /// Runs of each stage on this thread since its last timed one.
    static STAGE_TICKS: [std::cell::Cell<u32>; Stage::ALL.len()] =
        const { [const { std::cell::Cell::new(0) }; Stage::ALL.len()] };
}

/// Whether this run of `stage` on this thread is the one in [`STAGE_SAMPLE_EVERY`] timed: the
/// first, then every [`STAGE_SAMPLE_EVERY`]th after it (per thread and stage, so stages that
/// alternate on one thread do not hide each other).
fn stage_sampled(stage: Stage) -> bool {
    STAGE_TICKS.with(|ticks| {
        let tick = &ticks[stage as usize];
        let n = tick.get();
        tick.set(if n + 1 >= STAGE_SAMPLE_EVERY {
            0
        } else {
            n + 1
        });
        n == 0
    })
}

/// Run `f`, counting one item of `stage` and, for one run in [`STAGE_SAMPLE_EVERY`], the
/// calling thread's CPU time (scaled by [`STAGE_SAMPLE_EVERY`]) while stage accounting is on.
#[inline]
pub fn in_stage<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    STAGE_CPU.run(stage, f)
}

/// Append `signer_stage_cpu_seconds_total` and `signer_stage_items_total` per stage, if stage
/// accounting is on.
pub fn render_stage_cpu(out: &mut String) {
    if !STAGE_CPU.on.load(Ordering::Relaxed) {
        return;
    }
    out.push_str("# TYPE signer_stage_cpu_seconds_total counter\n");
    for s in Stage::ALL {
        let secs = STAGE_CPU.nanos[s as usize].load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "signer_stage_cpu_seconds_total{{stage=\"{}\"}} {secs}",
            s.name()
        );
    }
    let names = Stage::ALL.map(Stage::name);
    render_labelled(
        out,
        "signer_stage_items_total",
        "counter",
        "stage",
        names.iter().copied().zip(&STAGE_CPU.items),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_times_the_first_run_of_a_stage_and_every_sixteenth_after_it() {
        std::thread::spawn(|| {
            let mut timed = Vec::new();
            for n in 0..40u32 {
                if stage_sampled(Stage::Parse) {
                    timed.push(n);
                }
                // Another stage between two runs does not shift this one's count.
                assert_eq!(stage_sampled(Stage::Root), n % 16 == 0);
            }
            assert_eq!(timed, vec![0, 16, 32]);
        })
        .join()
        .unwrap();
        // A new thread starts its own count: its first run is timed.
        std::thread::spawn(|| assert!(stage_sampled(Stage::Parse)))
            .join()
            .unwrap();
    }

    #[test]
    fn a_stage_counts_every_run_and_estimates_its_cpu_from_the_runs_it_times() {
        // An instance of its own: other tests' stages do not count here.
        let acc = StageCpu::new();
        acc.on.store(true, Ordering::Relaxed);
        let i = Stage::Response as usize;
        // 64 runs of the same busy work on a fresh thread: four are timed, each counted 16 times.
        let spent = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let start = thread_cpu();
                    for _ in 0..64 {
                        acc.run(Stage::Response, || {
                            let t = thread_cpu();
                            while thread_cpu().saturating_sub(t) < Duration::from_micros(300) {
                                std::hint::spin_loop();
                            }
                        });
                    }
                    thread_cpu().saturating_sub(start)
                })
                .join()
                .unwrap()
        });
        let items = acc.items[i].load(Ordering::Relaxed);
        let estimate = Duration::from_nanos(acc.nanos[i].load(Ordering::Relaxed));
        assert_eq!(items, 64);
        // Every run costs the same: the estimate is the whole, within what scheduling adds.
        assert!(
            estimate > spent / 2 && estimate < spent * 2,
            "estimated {estimate:?} for {spent:?} of CPU"
        );
    }
}
