//! Putting t-of-n keys in place: a whole secret split across devices at provisioning (`keys
//! generate`/`keys import` with `--threshold`/`--devices`), or shares made elsewhere (a
//! distributed-validator tool's per-share keystores, `keys import-shares`) placed one per device.
//! Nothing is written until the shares are proven to recombine to the validator key and each
//! sealed envelope is proven to open, on its own device, to its share. Signing is not here.

use std::collections::HashSet;
use std::path::PathBuf;

use blst::min_pk::{PublicKey, SecretKey, Signature};
use hsm::Device;
use secrecy::SecretString;

use crate::bls;
use crate::devices::Devices;
use crate::error::{Result, SignerError};
use crate::keys::import::{decrypt_keystores, Decrypted, ImportReport, Progress};
pub(crate) use crate::keys::placement::{
    check_placement, parse_share_ids, resolve_placement, Placement, SplitPlan,
};
use crate::keys::record::{KeyRecord, PublicKeyBytes, ShareId, ShareRecord, KEY_FILE_VERSION};
use crate::keys::threshold::{self, HashedMessage};
use crate::keys::{seal_share, KeyStore};

/// A random message for proving shares (nothing else is ever signed with it).
pub(crate) fn random_root() -> Result<[u8; 32]> {
    let mut root = [0u8; 32];
    getrandom::getrandom(&mut root).map_err(|e| SignerError::Bls(format!("no randomness: {e}")))?;
    Ok(root)
}

/// Prove that `partials` (one per share, of the message `hashed`) come from shares of one
/// polynomial of degree < t through the validator key: the t-subsets of
/// [`threshold::proof_subsets`] (every one when there are few) each recombine to a signature
/// that verifies under `group`, which proves that every t-subset does.
pub(crate) fn check_recombination(
    group: &PublicKey,
    group_bytes: &PublicKeyBytes,
    threshold: usize,
    hashed: &HashedMessage,
    partials: &[(ShareId, Signature)],
) -> Result<()> {
    let subsets = threshold::proof_subsets(partials.len(), threshold);
    if subsets.is_empty() {
        return Err(SignerError::Threshold(format!(
            "threshold {threshold} with {} share(s)",
            partials.len()
        )));
    }
    for subset in subsets {
        let subset: Vec<(ShareId, Signature)> = subset.iter().map(|&i| partials[i]).collect();
        let sig = threshold::combine(&subset)?;
        if !threshold::verify_hashed(group, hashed, &sig) {
            let ids: Vec<String> = subset.iter().map(|(id, _)| id.to_string()).collect();
            return Err(SignerError::Threshold(format!(
                "shares {} do not recombine to the validator key {group_bytes} (wrong share, \
                 share id or group key?); nothing was stored",
                ids.join(",")
            )));
        }
    }
    Ok(())
}

/// Seal share `id` of `group` on `device`, and prove the envelope: its recorded public key is
/// the share's, and opened by its own device it signs `hashed` exactly as the share does.
pub(crate) fn seal_proven(
    device: &Device,
    group: &PublicKeyBytes,
    id: ShareId,
    sk: &SecretKey,
    hashed: &HashedMessage,
) -> Result<ShareRecord> {
    let record = seal_share(device, group, id, sk)?;
    if record.pubkey.0 != bls::public_key_bytes(sk) {
        return Err(SignerError::Bls(format!(
            "share {id}: recorded public key differs from the share's"
        )));
    }
    let reopened = threshold::partial_sign_with_share(device, group, &record, hashed, None)?;
    if reopened.compress() != threshold::partial_sign(sk, hashed).compress() {
        return Err(SignerError::Bls(format!(
            "share {id}: the envelope sealed on {} does not open to the share",
            device.name()
        )));
    }
    Ok(record)
}

/// Seal shares on their devices and write the key file, after proving the shares recombine to
/// `group` and each envelope opens on its device to its share. Nothing is written on failure.
#[allow(clippy::too_many_arguments)]
fn place_shares(
    store: &mut KeyStore,
    devices: &Devices,
    group: PublicKeyBytes,
    threshold: usize,
    shares: &[(ShareId, SecretKey)],
    device_names: &[String],
    origin: &str,
    derivation_path: Option<String>,
) -> Result<()> {
    if store.contains(&group) {
        return Err(SignerError::Threshold(format!(
            "key {group} is already in the store"
        )));
    }
    let targets = device_names
        .iter()
        .map(|d| devices.get(d))
        .collect::<Result<Vec<_>>>()?;
    let group_pk = PublicKey::key_validate(&group.0)
        .map_err(|e| SignerError::Threshold(format!("group public key {group}: {e:?}")))?;
    let hashed = HashedMessage::new(&random_root()?);
    let partials: Vec<(ShareId, Signature)> = shares
        .iter()
        .map(|(id, sk)| (*id, threshold::partial_sign(sk, &hashed)))
        .collect();
    check_recombination(&group_pk, &group, threshold, &hashed, &partials)?;

    let records = shares
        .iter()
        .zip(&targets)
        .map(|((id, sk), device)| seal_proven(device, &group, *id, sk, &hashed))
        .collect::<Result<Vec<_>>>()?;
    let record = KeyRecord {
        version: KEY_FILE_VERSION,
        pubkey: group,
        threshold: u32::try_from(threshold)
            .map_err(|_| SignerError::Threshold(format!("threshold {threshold} is too large")))?,
        shares: records,
        origin: origin.to_owned(),
        derivation_path,
        remote: Vec::new(),
        distributed: None,
    };
    store.insert(record)
}

/// Split `secret` t-of-n across `device_names` (share ids `ids`, default 1..n), seal each share
/// on its own device, check that the shares recombine and every envelope opens, then write the
/// key file. The caller's `secret` wipes itself when dropped; the shares are wiped here.
pub fn provision_threshold(
    store: &mut KeyStore,
    devices: &Devices,
    secret: &SecretKey,
    threshold: usize,
    device_names: &[String],
    ids: Option<&[ShareId]>,
    origin: &str,
) -> Result<PublicKeyBytes> {
    provision_threshold_with_path(
        store,
        devices,
        secret,
        threshold,
        device_names,
        ids,
        origin,
        None,
    )
}

/// [`provision_threshold`], recording the key's EIP-2334 derivation path in its key file.
#[allow(clippy::too_many_arguments)]
pub(crate) fn provision_threshold_with_path(
    store: &mut KeyStore,
    devices: &Devices,
    secret: &SecretKey,
    threshold: usize,
    device_names: &[String],
    ids: Option<&[ShareId]>,
    origin: &str,
    derivation_path: Option<String>,
) -> Result<PublicKeyBytes> {
    let ids = check_placement(threshold, device_names, ids)?;
    for d in device_names {
        devices.get(d)?;
    }
    let group = PublicKeyBytes(bls::public_key_bytes(secret));
    let shares = threshold::split(secret, threshold, &ids)?;
    place_shares(
        store,
        devices,
        group,
        threshold,
        &shares,
        device_names,
        origin,
        derivation_path,
    )?;
    Ok(group)
}

/// Generate `count` random keys, each split as `plan` says.
pub(crate) fn generate_threshold(
    store: &mut KeyStore,
    devices: &Devices,
    count: usize,
    plan: &SplitPlan,
) -> Result<Vec<PublicKeyBytes>> {
    plan.check(devices)?;
    (0..count)
        .map(|_| {
            let sk = bls::random_secret_key()?;
            provision_threshold(
                store,
                devices,
                &sk,
                plan.threshold,
                &plan.devices,
                plan.ids.as_deref(),
                "generated",
            )
        })
        .collect()
}

/// Import EIP-2335 keystores of whole keys, each split as `plan` says. All keystores are
/// decrypted first; if any fails nothing is stored. Keys already present are reported and left
/// as they are.
pub(crate) fn import_keystores_threshold(
    store: &mut KeyStore,
    devices: &Devices,
    paths: &[PathBuf],
    password: &SecretString,
    plan: &SplitPlan,
    progress: Progress,
) -> Result<ImportReport> {
    plan.check(devices)?;
    let Decrypted {
        secrets,
        mut report,
    } = decrypt_keystores(paths, std::slice::from_ref(password), progress)?;
    for (pubkey, sk) in secrets {
        if store.contains(&pubkey) || report.imported.contains(&pubkey) {
            report.duplicates.push(pubkey);
            continue;
        }
        provision_threshold(
            store,
            devices,
            &sk,
            plan.threshold,
            &plan.devices,
            plan.ids.as_deref(),
            "imported",
        )?;
        report.imported.push(pubkey);
    }
    Ok(report)
}

/// Shares made elsewhere: one EIP-2335 keystore per share (holding the share's secret and, as
/// distributed-validator tools write it, the share's public key), placed one per device.
#[derive(Debug, Clone)]
pub struct ShareImport {
    /// One keystore per share, in the order of `ids` and `devices`.
    pub keystores: Vec<PathBuf>,
    /// One password for all keystores, or one per keystore.
    pub passwords: Vec<SecretString>,
    /// The validator (group) public key the shares must recombine to.
    pub group_pubkey: PublicKeyBytes,
    /// Shares needed to sign.
    pub threshold: usize,
    /// The shares' x-coordinates.
    pub ids: Vec<ShareId>,
    /// The device for each share.
    pub devices: Vec<String>,
}

/// Check the counts of a share import before anything is read.
pub(crate) fn check_share_import(import: &ShareImport) -> Result<()> {
    if import.keystores.len() != import.devices.len() {
        return Err(SignerError::Threshold(format!(
            "{} keystore(s) for {} device(s): give one keystore per share and device",
            import.keystores.len(),
            import.devices.len()
        )));
    }
    check_placement(import.threshold, &import.devices, Some(&import.ids)).map(|_| ())
}

/// Import per-share keystores: decrypt each (checking it against its own claimed public key),
/// prove that the shares recombine to the group key, seal each on its device, write the file.
pub fn import_shares(
    store: &mut KeyStore,
    devices: &Devices,
    import: &ShareImport,
    progress: Progress,
) -> Result<PublicKeyBytes> {
    check_share_import(import)?;
    for d in &import.devices {
        devices.get(d)?;
    }
    if store.contains(&import.group_pubkey) {
        return Err(SignerError::Threshold(format!(
            "key {} is already in the store",
            import.group_pubkey
        )));
    }
    let Decrypted { secrets, .. } =
        decrypt_keystores(&import.keystores, &import.passwords, progress)?;
    let mut seen = HashSet::new();
    for ((pk, _), path) in secrets.iter().zip(&import.keystores) {
        if !seen.insert(*pk) {
            return Err(SignerError::Threshold(format!(
                "{}: share {pk} is given twice; nothing was stored",
                path.display()
            )));
        }
    }
    let shares: Vec<(ShareId, SecretKey)> = import
        .ids
        .iter()
        .zip(secrets)
        .map(|(id, (_, sk))| (*id, sk))
        .collect();
    place_shares(
        store,
        devices,
        import.group_pubkey,
        import.threshold,
        &shares,
        &import.devices,
        "imported-shares",
        None,
    )?;
    Ok(import.group_pubkey)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn placement_errors_are_one_line_each() {
        let three = names(&["a", "b", "c"]);
        type Case = (usize, Vec<String>, Option<Vec<u64>>, &'static str);
        let cases: &[Case] = &[
            (0, three.clone(), None, "threshold must be at least 1"),
            (
                4,
                three.clone(),
                None,
                "threshold 4 needs at least 4 devices, got 3",
            ),
            (2, names(&["a", "b", "a"]), None, "device a is listed twice"),
            (2, names(&[]), None, "no devices"),
            (
                2,
                three.clone(),
                Some(vec![1, 2]),
                "2 share id(s) for 3 device(s)",
            ),
            (
                2,
                three.clone(),
                Some(vec![1, 2, 1]),
                "share id 1 is listed twice",
            ),
        ];
        for (t, devs, ids, expect) in cases {
            let ids: Option<Vec<ShareId>> = ids
                .as_ref()
                .map(|v| v.iter().map(|&i| ShareId::new(i).unwrap()).collect());
            let err = check_placement(*t, devs, ids.as_deref())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{err:?} lacks {expect:?}");
            assert_eq!(err.lines().count(), 1, "{err:?}");
        }
        assert_eq!(
            check_placement(2, &three, None).unwrap(),
            threshold::default_ids(3)
        );
    }

    #[test]
    fn share_ids_parse_and_zero_is_refused() {
        let ids = parse_share_ids("1, 7,3").unwrap();
        assert_eq!(ids.iter().map(|i| i.get()).collect::<Vec<_>>(), [1, 7, 3]);
        assert!(parse_share_ids("1,0,2")
            .unwrap_err()
            .to_string()
            .contains("share id 0 is not allowed"));
        assert!(parse_share_ids("1,x").is_err());
        assert!(parse_share_ids("-1").is_err());
    }
}
