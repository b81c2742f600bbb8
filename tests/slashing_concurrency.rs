//! Slashing protection under concurrency and crashes: conflicting requests race and exactly one
//! wins; different validators share transactions (group commit); what was answered `Ok` is on
//! disk, even when the process is killed with SIGKILL right after.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};

use hsm_signer::slashing::{Options, Proposal, Refusal, SlashingError, SlashingProtection};

const GVR: [u8; 32] = [0x33; 32];

fn open(path: &Path) -> SlashingProtection {
    SlashingProtection::open_sqlite(path, Some(GVR)).expect("open")
}

/// Run `n` threads that start together; thread `i` submits `proposal(i)` for `pubkey(i)`.
fn race(
    sp: &SlashingProtection,
    n: usize,
    pubkey: impl Fn(usize) -> [u8; 48] + Sync,
    proposal: impl Fn(usize) -> Proposal + Sync,
) -> Vec<Result<(), SlashingError>> {
    let barrier = Arc::new(Barrier::new(n));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (sp, barrier, pubkey, proposal) =
                    (sp.clone(), barrier.clone(), &pubkey, &proposal);
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || {
                        barrier.wait();
                        sp.check_and_record(&pubkey(i), &GVR, proposal(i))
                    })
                    .expect("spawn")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

fn root(i: usize) -> [u8; 32] {
    let mut r = [0u8; 32];
    r[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    r
}

#[test]
fn exactly_one_of_1000_conflicting_attestations_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let sp = open(&dir.path().join("a.sqlite"));
    let results = race(
        &sp,
        1000,
        |_| [1; 48],
        |i| Proposal::Attestation {
            source_epoch: 4,
            target_epoch: 5,
            signing_root: root(i),
        },
    );
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1);
    for r in &results {
        assert!(
            matches!(
                r,
                Ok(()) | Err(SlashingError::Refused(Refusal::DoubleVote { .. }))
            ),
            "{r:?}"
        );
    }
    let stats = sp.stats();
    assert_eq!((stats.requests, stats.refused), (1000, 999));
    eprintln!("1000 conflicting attestations: {stats:?}");
}

#[test]
fn exactly_one_of_1000_conflicting_blocks_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let sp = open(&dir.path().join("b.sqlite"));
    let results = race(
        &sp,
        1000,
        |_| [2; 48],
        |i| Proposal::Block {
            slot: 77,
            signing_root: root(i),
        },
    );
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results.iter().all(|r| matches!(
        r,
        Ok(()) | Err(SlashingError::Refused(Refusal::DoubleBlockProposal { .. }))
    )));
}

#[test]
fn surround_races_allow_only_a_consistent_set() {
    // Pairs of mutually slashable attestations racing: whichever lands first wins, the other is
    // refused, so the allowed set is never slashable.
    let dir = tempfile::tempdir().unwrap();
    let sp = open(&dir.path().join("s.sqlite"));
    let votes = [(10u64, 20u64), (11, 19), (9, 21), (12, 18), (8, 22)];
    let results = race(
        &sp,
        500,
        |_| [3; 48],
        |i| {
            let (s, t) = votes[i % votes.len()];
            Proposal::Attestation {
                source_epoch: s,
                target_epoch: t,
                signing_root: root(i % votes.len()),
            }
        },
    );
    // Every vote surrounds or is surrounded by every other: one kind wins (its copies are
    // identical re-signs), all the others are refused.
    let winners: std::collections::HashSet<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i % votes.len())
        .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
}

#[test]
fn identical_concurrent_requests_are_all_allowed_and_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let sp = open(&dir.path().join("i.sqlite"));
    let results = race(
        &sp,
        200,
        |_| [4; 48],
        |_| Proposal::Attestation {
            source_epoch: 1,
            target_epoch: 2,
            signing_root: root(0),
        },
    );
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(sp.stats().repeats, 199);
}

#[test]
fn different_validators_share_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let sp = open(&dir.path().join("g.sqlite"));
    let threads = 200;
    let rounds = 10u64;
    let barrier = Arc::new(Barrier::new(threads));
    std::thread::scope(|s| {
        for t in 0..threads {
            let (sp, barrier) = (sp.clone(), barrier.clone());
            s.spawn(move || {
                barrier.wait();
                let mut pk = [0u8; 48];
                pk[..8].copy_from_slice(&(t as u64).to_le_bytes());
                for e in 1..=rounds {
                    let p = Proposal::Attestation {
                        source_epoch: e - 1,
                        target_epoch: e,
                        signing_root: root(t),
                    };
                    sp.check_and_record(&pk, &GVR, p).expect("allowed");
                }
            });
        }
    });
    let stats = sp.stats();
    eprintln!("group commit: {stats:?}");
    assert_eq!(stats.requests, threads as u64 * rounds);
    assert_eq!(stats.refused + stats.failed_transactions, 0);
    assert!(stats.largest_batch > 1, "{stats:?}");
    assert!(stats.transactions < stats.requests / 2, "{stats:?}");
}

#[test]
fn one_transaction_per_request_when_batching_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let sp = SlashingProtection::open_sqlite_with(
        &dir.path().join("o.sqlite"),
        Some(GVR),
        Options {
            max_batch: 1,
            ..Options::default()
        },
    )
    .unwrap();
    let results = race(
        &sp,
        50,
        |i| [i as u8; 48],
        |_| Proposal::Block {
            slot: 1,
            signing_root: root(0),
        },
    );
    assert!(results.iter().all(|r| r.is_ok()));
    let stats = sp.stats();
    assert_eq!(stats.transactions, stats.requests);
}

#[test]
fn async_callers_get_the_same_guarantee() {
    let dir = tempfile::tempdir().unwrap();
    let sp = open(&dir.path().join("y.sqlite"));
    // The async wait is bounded (Options::wait): it needs the runtime's timer, as the server's has.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let ok = rt.block_on(async {
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let sp = sp.clone();
                tokio::spawn(async move {
                    let p = Proposal::Attestation {
                        source_epoch: 0,
                        target_epoch: 3,
                        signing_root: root(i),
                    };
                    sp.check_and_record_async(&[5; 48], &GVR, p).await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            if t.await.expect("task").is_ok() {
                ok += 1;
            }
        }
        ok
    });
    assert_eq!(ok, 1);
}

#[test]
fn an_allowed_request_is_on_disk_for_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sqlite");
    let sp = open(&path);
    sp.check_and_record(
        &[6; 48],
        &GVR,
        Proposal::Block {
            slot: 9,
            signing_root: root(1),
        },
    )
    .unwrap();
    drop(sp);
    let sp = open(&path);
    let r = sp.check_and_record(
        &[6; 48],
        &GVR,
        Proposal::Block {
            slot: 9,
            signing_root: root(2),
        },
    );
    assert!(matches!(
        r,
        Err(SlashingError::Refused(Refusal::DoubleBlockProposal { .. }))
    ));
    sp.check_and_record(
        &[6; 48],
        &GVR,
        Proposal::Block {
            slot: 9,
            signing_root: root(1),
        },
    )
    .unwrap();
    // A second service on the same file (another process, say) sees it too.
    let other = open(&path);
    let r = other.check_and_record(
        &[6; 48],
        &GVR,
        Proposal::Block {
            slot: 9,
            signing_root: root(3),
        },
    );
    assert!(r.is_err());
}

#[test]
fn a_failed_transaction_refuses_every_request_in_it_and_records_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.sqlite");
    let sp = open(&path);
    // Another connection injects a failure for target epoch 666, and holds the write lock so
    // that requests queue up behind the first one and form one batch.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER inject BEFORE INSERT ON signed_attestations WHEN NEW.target_epoch = 666
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;
         BEGIN IMMEDIATE;",
    )
    .unwrap();
    let att = |e: u64, r: usize| Proposal::Attestation {
        source_epoch: e - 1,
        target_epoch: e,
        signing_root: root(r),
    };
    let (first, rest) = std::thread::scope(|s| {
        let sp1 = sp.clone();
        let first = s.spawn(move || sp1.check_and_record(&[100; 48], &GVR, att(5, 0)));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let rest: Vec<_> = (0..21u8)
            .map(|i| {
                let sp = sp.clone();
                s.spawn(move || {
                    let e = if i == 0 { 666 } else { 5 };
                    sp.check_and_record(&[i; 48], &GVR, att(e, 0))
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(700));
        raw.execute_batch("COMMIT").unwrap();
        let first = first.join().unwrap();
        let rest: Vec<_> = rest.into_iter().map(|h| h.join().unwrap()).collect();
        (first, rest)
    });
    first.unwrap();
    for r in &rest {
        assert!(
            matches!(r, Err(SlashingError::Store(m)) if m.contains("injected")),
            "{r:?}"
        );
    }
    assert_eq!(sp.stats().failed_transactions, 1);
    // Nothing of the failed batch was recorded: conflicting requests are now allowed, and the
    // writer goes on serving.
    raw.execute_batch("DROP TRIGGER inject").unwrap();
    for i in 1..21u8 {
        sp.check_and_record(&[i; 48], &GVR, att(5, 1)).unwrap();
    }
    sp.check_and_record(&[0; 48], &GVR, att(666, 1)).unwrap();
}

const CHILD_DB: &str = "HSM_SIGNER_SLASHING_CHILD_DB";
const CHILD_VALIDATORS: usize = 4;

/// Not a test on its own: the child process of `sigkill_never_loses_an_answered_record`
/// (re-executed test binary). Without the variable it does nothing.
#[test]
fn sigkill_child_process() {
    let Some(path) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let sp = open(Path::new(&path));
    // Per validator, two threads race conflicting attestations for each epoch; every win is
    // printed (and flushed) only after check_and_record returned Ok.
    let start: u64 = std::env::var("HSM_SIGNER_SLASHING_CHILD_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    std::thread::scope(|s| {
        for v in 0..CHILD_VALIDATORS {
            for side in 0..2u8 {
                let sp = sp.clone();
                s.spawn(move || {
                    use std::io::Write;
                    for e in start.. {
                        let p = Proposal::Attestation {
                            source_epoch: e - 1,
                            target_epoch: e,
                            signing_root: [side + 1; 32],
                        };
                        if sp.check_and_record(&[v as u8 + 10; 48], &GVR, p).is_ok() {
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(out, "signed {v} {e} {side}");
                            let _ = out.flush();
                        }
                    }
                });
            }
        }
    });
}

#[test]
fn sigkill_never_loses_an_answered_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.sqlite");
    drop(open(&path));
    let exe = std::env::current_exe().unwrap();
    let mut answered: Vec<(usize, u64, u8)> = Vec::new();
    let mut next_epoch = 1u64;
    for kill in 0..20 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "sigkill_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB, &path)
            .env("HSM_SIGNER_SLASHING_CHILD_EPOCH", next_epoch.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let wanted = 5 + (kill * 37) % 60;
        let mut seen = 0;
        while seen < wanted {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(rest) = line.strip_prefix("signed ") {
                let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                answered.push((f[0] as usize, f[1], f[2] as u8));
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
                               // Lines already written before the kill were answered too.
        for line in lines.map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("signed ") {
                let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                answered.push((f[0] as usize, f[1], f[2] as u8));
            }
        }
        child.wait().unwrap();
        assert!(seen > 0, "child {kill} printed nothing");
        // Continue above every answered epoch, and above anything recorded but unanswered.
        next_epoch = answered.iter().map(|a| a.1).max().unwrap_or(0) + 1000;
    }
    // No two answered signatures conflict, and every answered one is recorded.
    let mut by_slot = std::collections::HashMap::new();
    for &(v, e, side) in &answered {
        if let Some(prev) = by_slot.insert((v, e), side) {
            assert_eq!(
                prev, side,
                "validator {v} epoch {e} answered for both roots"
            );
        }
    }
    let sp = open(&path);
    for &(v, e, side) in &answered {
        let other = Proposal::Attestation {
            source_epoch: e - 1,
            target_epoch: e,
            signing_root: [2 - side; 32],
        };
        let r = sp.check_and_record(&[v as u8 + 10; 48], &GVR, other);
        assert!(
            matches!(r, Err(SlashingError::Refused(Refusal::DoubleVote { .. }))),
            "validator {v} epoch {e}: {r:?}"
        );
        let same = Proposal::Attestation {
            source_epoch: e - 1,
            target_epoch: e,
            signing_root: [side + 1; 32],
        };
        sp.check_and_record(&[v as u8 + 10; 48], &GVR, same)
            .unwrap();
    }
    eprintln!(
        "{} answered signatures over 20 SIGKILLs, all recorded",
        answered.len()
    );
}
