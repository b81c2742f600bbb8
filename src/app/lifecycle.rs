//! The key lifecycle: the gate every signing request passes (deleted keys refused, signatures
//! under way counted so a deletion can wait for them), the tombstones of keys deleted through
//! the Keymanager API (kept in the slashing database, honoured at start and at every reload),
//! and placing an imported key on its device(s).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::app::Signer;
use crate::keys::provision::{provision_threshold_with_path, Placement};
use crate::keys::{seal_share, KeyRecord, KeyStore, PublicKeyBytes, ShareId};
use crate::slashing::{SlashingError, SlashingProtection};

/// Which keys are deleted, and which signatures are under way: the gate every signing request
/// passes, and the lock that serialises changes of the key set (Keymanager calls and reloads).
#[derive(Debug, Default)]
pub struct KeyGate {
    /// Held while the key set changes: Keymanager POST and DELETE, and `/reload`.
    pub write: Arc<tokio::sync::Mutex<()>>,
    state: Mutex<GateState>,
    drained: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct GateState {
    deleted: HashSet<PublicKeyBytes>,
    in_flight: HashMap<PublicKeyBytes, usize>,
}

/// A signing request under way for a key; DELETE of the key waits until it is dropped.
pub struct SignPermit<'a> {
    gate: &'a KeyGate,
    pubkey: PublicKeyBytes,
}

impl Drop for SignPermit<'_> {
    fn drop(&mut self) {
        let mut st = self.gate.lock();
        if let Some(n) = st.in_flight.get_mut(&self.pubkey) {
            *n -= 1;
            if *n == 0 {
                st.in_flight.remove(&self.pubkey);
                drop(st);
                self.gate.drained.notify_waiters();
            }
        }
    }
}

impl KeyGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit a signing request for `pubkey`; `None` when the key was deleted.
    pub fn enter(&self, pubkey: &PublicKeyBytes) -> Option<SignPermit<'_>> {
        let mut st = self.lock();
        if st.deleted.contains(pubkey) {
            return None;
        }
        *st.in_flight.entry(*pubkey).or_insert(0) += 1;
        Some(SignPermit {
            gate: self,
            pubkey: *pubkey,
        })
    }

    /// Whether `pubkey` is deleted.
    pub(crate) fn is_deleted(&self, pubkey: &PublicKeyBytes) -> bool {
        self.lock().deleted.contains(pubkey)
    }

    /// Refuse `keys` from now on (deleted here, or found deleted by another signer).
    pub fn mark_deleted(&self, keys: impl IntoIterator<Item = PublicKeyBytes>) {
        self.lock().deleted.extend(keys);
    }

    /// Refuse exactly `keys` from now on (the deletions the database records; a reload holds
    /// the Keymanager write lock, so no DELETE is half done meanwhile).
    pub(crate) fn replace_deleted(&self, keys: impl IntoIterator<Item = PublicKeyBytes>) {
        self.lock().deleted = keys.into_iter().collect();
    }

    /// Admit `keys` again (imported again).
    pub fn clear_deleted(&self, keys: &[PublicKeyBytes]) {
        let mut st = self.lock();
        for k in keys {
            st.deleted.remove(k);
        }
    }

    /// Refuse new signing requests for `keys`, then wait (at most `timeout`) until none is under
    /// way. Returns the keys still busy at the timeout.
    pub async fn stop(&self, keys: &[PublicKeyBytes], timeout: Duration) -> Vec<PublicKeyBytes> {
        self.mark_deleted(keys.iter().copied());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            // Registered before the check, so a permit dropped in between still wakes us.
            notified.as_mut().enable();
            let busy: Vec<PublicKeyBytes> = {
                let st = self.lock();
                keys.iter()
                    .filter(|k| st.in_flight.contains_key(k))
                    .copied()
                    .collect()
            };
            if busy.is_empty() {
                return busy;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return busy;
            }
        }
    }
}

/// Read the tombstones from the slashing database into the deny-list, then drop deleted keys
/// from `keys`, with a warning for each: a deliberate exclusion, not a load error (so health
/// stays up). Returns how many were dropped. Blocks: call from a blocking thread or at
/// start-up. `db` is read when the signer has no slashing protection of its own.
pub(crate) fn exclude_deleted(
    app: &Signer,
    db: Option<&SlashingProtection>,
    keys: &mut KeyStore,
) -> Result<usize, SlashingError> {
    if let Some(slashing) = app.slashing.as_ref().or(db) {
        // The database is the record: a key another signer imported again since (its mark
        // cleared there) signs here again after a reload, not only after a restart.
        let stored = slashing.deleted_keys()?;
        app.key_gate
            .replace_deleted(stored.into_iter().map(PublicKeyBytes));
    }
    let loaded: Vec<PublicKeyBytes> = keys.iter().map(|r| r.pubkey).collect();
    let mut dropped = 0;
    for pk in loaded {
        if app.key_gate.is_deleted(&pk) {
            keys.forget(&pk);
            dropped += 1;
            tracing::warn!(
                %pk,
                "key file ignored: the key was deleted through the Keymanager API and signs \
                 nothing until its keystore is imported again (POST /eth/v1/keystores)"
            );
        }
    }
    Ok(dropped)
}

impl Signer {
    /// Keep keys deleted through the Keymanager API out of the signing set: read the tombstones
    /// from the slashing database (the signer's own, else `db`: a signer running without
    /// slashing protection still honours deletions) and drop those keys from the loaded set. Call
    /// once at start-up (it blocks on the database). Returns how many loaded keys were dropped.
    pub(crate) fn exclude_deleted_keys(
        &self,
        db: Option<&SlashingProtection>,
    ) -> Result<usize, SlashingError> {
        let current = self.runtime();
        let mut keys = current.keys.clone();
        let dropped = exclude_deleted(self, db, &mut keys)?;
        if dropped > 0 {
            self.swap_keys(&current, keys, current.key_errors.clone());
        }
        Ok(dropped)
    }
}

/// Seal `sk` as `placement` says and write its key file (replacing a stale, unloaded one).
pub(crate) fn place_key(
    store: &mut KeyStore,
    devices: &crate::devices::Devices,
    placement: &Placement,
    pubkey: PublicKeyBytes,
    sk: &blst::min_pk::SecretKey,
    derivation_path: Option<String>,
) -> crate::Result<()> {
    store.remove_stale_file(&pubkey)?;
    match placement {
        Placement::Whole(device) => {
            let one = ShareId::ONE;
            let share = seal_share(devices.get(device)?, &pubkey, one, sk)?;
            let mut record = KeyRecord::whole(pubkey, share, "keymanager");
            record.derivation_path = derivation_path;
            store.insert(record)
        }
        Placement::Split(plan) => provision_threshold_with_path(
            store,
            devices,
            sk,
            plan.threshold,
            &plan.devices,
            plan.ids.as_deref(),
            "keymanager",
            derivation_path,
        )
        .map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(b: u8) -> PublicKeyBytes {
        PublicKeyBytes([b; 48])
    }

    #[tokio::test]
    async fn stop_refuses_new_requests_and_waits_for_those_under_way() {
        let gate = Arc::new(KeyGate::default());
        let permit = gate.enter(&pk(1)).map(|p| p.pubkey);
        assert_eq!(permit, Some(pk(1)));
        // A permit held by another task: stop must wait for it.
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let g = gate.clone();
        let holder = tokio::spawn(async move {
            let _permit = g.enter(&pk(2)).expect("key 2 is not deleted");
            held_tx.send(()).unwrap();
            release_rx.await.unwrap();
        });
        held_rx.await.unwrap();
        let g = gate.clone();
        let stopper = tokio::spawn(async move { g.stop(&[pk(2)], Duration::from_secs(60)).await });
        // Until the holder lets go, new requests are refused and stop has not returned.
        while !gate.is_deleted(&pk(2)) {
            tokio::task::yield_now().await;
        }
        assert!(gate.enter(&pk(2)).is_none(), "a deleted key was admitted");
        assert!(!stopper.is_finished());
        release_tx.send(()).unwrap();
        holder.await.unwrap();
        assert_eq!(stopper.await.unwrap(), Vec::<PublicKeyBytes>::new());
        // Other keys are unaffected; clearing re-admits.
        assert!(gate.enter(&pk(3)).is_some());
        gate.clear_deleted(&[pk(2)]);
        assert!(gate.enter(&pk(2)).is_some());
    }

    #[tokio::test]
    async fn stop_reports_keys_still_busy_at_the_timeout() {
        let gate = KeyGate::default();
        let _permit = gate.enter(&pk(7)).unwrap();
        let busy = gate.stop(&[pk(7), pk(8)], Duration::from_millis(1)).await;
        assert_eq!(busy, vec![pk(7)]);
        assert!(gate.is_deleted(&pk(8)));
    }
}
