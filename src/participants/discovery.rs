//! Account discovery, as the profile has a coordinator do it: every configured participant's
//! accounts read over mutual TLS, each view bound to the participant that answered (its id must
//! be listed at that participant's own endpoint), views of one key required to agree, and the
//! share public keys proved to interpolate to the key; the result is the coordinator's key
//! records. A view that fails any check is reported and left out, never half-used.

use std::collections::BTreeMap;

use blst::min_pk::PublicKey;

use super::client::AccountView;
use super::Participants;
use crate::keys::threshold::{interpolate_public_key, proof_subsets};
use crate::keys::{KeyRecord, PublicKeyBytes, RemoteShare, ShareId, KEY_FILE_VERSION};

/// What discovery found: the records to store, and why anything was left out.
#[derive(Debug, Default)]
pub struct Discovery {
    /// One record per key that t or more configured participants hold consistently.
    pub records: Vec<KeyRecord>,
    /// One line per participant or key left out, saying why.
    pub problems: Vec<String>,
}

/// One participant's view of one account, parsed and bound to it.
struct Bound {
    participant: String,
    id: ShareId,
    share: PublicKeyBytes,
    threshold: u32,
    /// Every participant of the account, by id (endpoints lowercased).
    members: BTreeMap<u64, String>,
}

fn origin(s: &str) -> String {
    s.trim_end_matches('/').to_ascii_lowercase()
}

fn valid_key(s: &str) -> Option<PublicKeyBytes> {
    let pk = PublicKeyBytes::parse(s)?;
    PublicKey::key_validate(&pk.0).ok().map(|_| pk)
}

/// Parse one view and bind it to `participant` (which answered from `url`).
fn bind(participant: &str, url: &str, v: &AccountView) -> Result<(PublicKeyBytes, Bound), String> {
    let composite = valid_key(&v.composite_public_key)
        .ok_or("composite_public_key is not a valid public key")?;
    let id = v
        .participant_id
        .parse::<u64>()
        .ok()
        .and_then(ShareId::new)
        .ok_or("participant_id is not a non-zero decimal integer")?;
    let share = valid_key(&v.public_key).ok_or("public_key is not a valid public key")?;
    let threshold: u32 = v
        .signing_threshold
        .parse()
        .map_err(|_| "signing_threshold is not a decimal integer")?;
    let mut members = BTreeMap::new();
    let mut endpoints = std::collections::HashSet::new();
    for m in &v.participants {
        let mid =
            m.id.parse::<u64>()
                .ok()
                .filter(|i| *i != 0)
                .ok_or("a participant id is not a non-zero decimal integer")?;
        crate::config::check_https_origin(&m.endpoint)?;
        if !endpoints.insert(origin(&m.endpoint)) {
            return Err(format!("endpoint {} is listed twice", m.endpoint));
        }
        if members.insert(mid, origin(&m.endpoint)).is_some() {
            return Err(format!("participant id {mid} is listed twice"));
        }
    }
    if threshold == 0 || threshold as usize > members.len() {
        return Err(format!(
            "signing threshold {threshold} with {} participants",
            members.len()
        ));
    }
    // The profile: the responder's authenticated endpoint must map to its participant_id.
    match members.get(&id.get()) {
        Some(endpoint) if *endpoint == origin(url) => {}
        Some(endpoint) => {
            return Err(format!(
                "it answered as participant {id}, which the account lists at {endpoint}, not at \
                 its own {url}"
            ))
        }
        None => {
            return Err(format!(
                "it answered as participant {id}, which the account does not list"
            ))
        }
    }
    Ok((
        composite,
        Bound {
            participant: participant.to_owned(),
            id,
            share,
            threshold,
            members,
        },
    ))
}

/// Read every participant's accounts and make the coordinator's key records.
pub fn discover(participants: &Participants) -> Discovery {
    let mut out = Discovery::default();
    let mut by_key: BTreeMap<PublicKeyBytes, Vec<Bound>> = BTreeMap::new();
    for p in participants.iter() {
        let views = match p.accounts() {
            Ok(v) => v,
            Err(e) => {
                out.problems.push(e.to_string());
                continue;
            }
        };
        for v in &views {
            match bind(p.name(), p.url(), v) {
                Ok((composite, bound)) => by_key.entry(composite).or_default().push(bound),
                Err(why) => out.problems.push(format!(
                    "participant {}: account {}: {why}; left out",
                    p.name(),
                    short(&v.composite_public_key)
                )),
            }
        }
    }
    for (composite, views) in by_key {
        match record(composite, &views) {
            Ok(r) => out.records.push(r),
            Err(why) => out
                .problems
                .push(format!("key {composite}: {why}; left out")),
        }
    }
    out
}

fn short(s: &str) -> String {
    s.chars().take(20).collect()
}

/// The record for one key from its participants' views: they agree on the threshold and the
/// participant set, hold distinct shares, are t or more, and their share keys interpolate to
/// the key.
fn record(composite: PublicKeyBytes, views: &[Bound]) -> Result<KeyRecord, String> {
    let first = &views[0];
    for v in &views[1..] {
        if v.threshold != first.threshold || v.members != first.members {
            return Err(format!(
                "participants {} and {} disagree on the threshold or the participant set",
                first.participant, v.participant
            ));
        }
    }
    let mut remote: Vec<RemoteShare> = Vec::new();
    for v in views {
        if let Some(other) = remote.iter().find(|r| r.id == v.id) {
            return Err(format!(
                "participants {} and {} both answer as share {}",
                other.participant, v.participant, v.id
            ));
        }
        remote.push(RemoteShare {
            id: v.id,
            participant: v.participant.clone(),
            pubkey: v.share,
        });
    }
    let t = first.threshold as usize;
    if remote.len() < t {
        return Err(format!(
            "{} of its {} participants are configured and answered; it needs {t}",
            remote.len(),
            first.members.len()
        ));
    }
    remote.sort_by_key(|r| r.id);
    let keys: Vec<(ShareId, PublicKey)> = remote
        .iter()
        .map(|r| {
            PublicKey::key_validate(&r.pubkey.0)
                .map(|pk| (r.id, pk))
                .map_err(|_| format!("share {} has an invalid public key", r.id))
        })
        .collect::<Result<_, _>>()?;
    for subset in proof_subsets(keys.len(), t) {
        let picked: Vec<(ShareId, PublicKey)> = subset.iter().map(|&i| keys[i]).collect();
        let got = interpolate_public_key(&picked).map_err(|e| e.to_string())?;
        if got.to_bytes() != composite.0 {
            let ids: Vec<String> = picked.iter().map(|(id, _)| id.to_string()).collect();
            return Err(format!(
                "the share keys of participants {} do not interpolate to it",
                ids.join(", ")
            ));
        }
    }
    Ok(KeyRecord {
        version: KEY_FILE_VERSION,
        pubkey: composite,
        threshold: first.threshold,
        shares: Vec::new(),
        origin: "distributed".into(),
        derivation_path: None,
        remote,
        distributed: None,
    })
}
