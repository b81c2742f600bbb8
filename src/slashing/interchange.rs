//! EIP-3076 interchange format v5: parsing (strict: decimal strings, 0x-hex of the right
//! length), atomic import, and export.
//!
//! Import, per validator (duplicate entries of one pubkey are merged, as the EIP allows):
//! - a record identical to a recorded one (same slot/epochs and signing root, or both without a
//!   root) is already known and skipped, so re-importing a file changes nothing;
//! - if every other record is consistent with the database and with the file's earlier records
//!   (no double proposal or vote, no surround, no source after target), all are recorded as
//!   they are (complete strategy). Records older than the validator's existing history are kept,
//!   but the low watermarks in force before the import are kept too: importing old data never
//!   lowers protection;
//! - otherwise the file holds slashable data for that validator: nothing of it is recorded
//!   and its low watermarks rise to the file's maxima (highest slot; highest source and highest
//!   target), as if the file had been minified. It is reported in [`ImportSummary::minified`].
//!
//! Export writes every record; for a validator whose explicit watermarks lie above its lowest
//! records (pruned, or fed a minified import), it writes what keeps an importer at least as
//! strict: blocks from the watermark up (a root-less block standing at the watermark), and one
//! attestation at the highest source and target.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::store::{max_opt, AttestationRecord, BlockRecord, StoreTxn, ValidatorId, Watermarks};
use super::{hex_root, rules, Pubkey, Root, SlashingError, MAX_SLOT_OR_EPOCH};

/// The only interchange format version we read and write.
pub(crate) const FORMAT_VERSION: &str = "5";

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Distinct validators in the file.
    pub validators: usize,
    /// Blocks recorded.
    pub blocks_recorded: usize,
    /// Attestations recorded.
    pub attestations_recorded: usize,
    /// Records skipped because the database already had them.
    pub already_recorded: usize,
    /// Validators whose data was slashable and was imported as watermarks instead.
    pub minified: Vec<MinifiedValidator>,
}

/// A validator imported as watermarks because its data was slashable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinifiedValidator {
    /// The validator.
    pub pubkey: Pubkey,
    /// The first conflict found.
    pub reason: String,
}

#[derive(Deserialize, Serialize)]
struct InterchangeJson {
    metadata: MetadataJson,
    data: Vec<ValidatorJson>,
}

#[derive(Deserialize, Serialize)]
struct MetadataJson {
    interchange_format_version: String,
    genesis_validators_root: String,
}

#[derive(Deserialize, Serialize)]
struct ValidatorJson {
    pubkey: String,
    signed_blocks: Vec<BlockJson>,
    signed_attestations: Vec<AttestationJson>,
}

#[derive(Deserialize, Serialize)]
struct BlockJson {
    slot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signing_root: Option<String>,
}

#[derive(Deserialize, Serialize)]
struct AttestationJson {
    source_epoch: String,
    target_epoch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signing_root: Option<String>,
}

/// A parsed, validated interchange.
pub(crate) struct Interchange {
    pub(crate) genesis_validators_root: Root,
    /// One entry per distinct pubkey, in order of first appearance.
    pub(crate) validators: Vec<ValidatorHistory>,
}

pub(crate) struct ValidatorHistory {
    pub(crate) pubkey: Pubkey,
    pub(crate) blocks: Vec<BlockRecord>,
    pub(crate) attestations: Vec<AttestationRecord>,
}

fn bad(at: impl std::fmt::Display, what: impl std::fmt::Display) -> SlashingError {
    SlashingError::Interchange(format!("{at}: {what}"))
}

fn parse_number(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a decimal string, got {s:?}"));
    }
    let v: u64 = s.parse().map_err(|_| format!("{s} is too large"))?;
    if v > MAX_SLOT_OR_EPOCH {
        return Err(format!(
            "{v} is beyond the supported maximum {MAX_SLOT_OR_EPOCH}"
        ));
    }
    Ok(v)
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("expected 0x-prefixed hex, got {s:?}"))?;
    if digits.len() != 2 * N {
        return Err(format!("expected {N} bytes of hex, got {s:?}"));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).map_err(|e| format!("{s:?}: {e}"))?;
    Ok(out)
}

/// Parse and validate an interchange file.
pub(crate) fn parse(json: &str) -> Result<Interchange, SlashingError> {
    let file: InterchangeJson = serde_json::from_str(json)
        .map_err(|e| SlashingError::Interchange(format!("not an EIP-3076 interchange: {e}")))?;
    let version = &file.metadata.interchange_format_version;
    if version != FORMAT_VERSION {
        return Err(bad(
            "metadata.interchange_format_version",
            format!("unsupported version {version:?}, expected \"{FORMAT_VERSION}\""),
        ));
    }
    let genesis_validators_root = parse_hex::<32>(&file.metadata.genesis_validators_root)
        .map_err(|e| bad("metadata.genesis_validators_root", e))?;

    let mut validators: Vec<ValidatorHistory> = Vec::new();
    let mut index: HashMap<Pubkey, usize> = HashMap::new();
    for (i, v) in file.data.iter().enumerate() {
        let pubkey = parse_hex::<48>(&v.pubkey).map_err(|e| bad(format!("data[{i}].pubkey"), e))?;
        let at = *index.entry(pubkey).or_insert_with(|| {
            validators.push(ValidatorHistory {
                pubkey,
                blocks: Vec::new(),
                attestations: Vec::new(),
            });
            validators.len() - 1
        });
        for (j, b) in v.signed_blocks.iter().enumerate() {
            let here = format!("data[{i}].signed_blocks[{j}]");
            let slot = parse_number(&b.slot).map_err(|e| bad(format!("{here}.slot"), e))?;
            let signing_root = b
                .signing_root
                .as_deref()
                .map(parse_hex::<32>)
                .transpose()
                .map_err(|e| bad(format!("{here}.signing_root"), e))?;
            validators[at]
                .blocks
                .push(BlockRecord { slot, signing_root });
        }
        for (j, a) in v.signed_attestations.iter().enumerate() {
            let here = format!("data[{i}].signed_attestations[{j}]");
            let source_epoch = parse_number(&a.source_epoch)
                .map_err(|e| bad(format!("{here}.source_epoch"), e))?;
            let target_epoch = parse_number(&a.target_epoch)
                .map_err(|e| bad(format!("{here}.target_epoch"), e))?;
            let signing_root = a
                .signing_root
                .as_deref()
                .map(parse_hex::<32>)
                .transpose()
                .map_err(|e| bad(format!("{here}.signing_root"), e))?;
            validators[at].attestations.push(AttestationRecord {
                source_epoch,
                target_epoch,
                signing_root,
            });
        }
    }
    Ok(Interchange {
        genesis_validators_root,
        validators,
    })
}

/// Import `ic` inside the caller's transaction (the caller rolls back on `Err`).
pub(crate) fn import(
    tx: &mut dyn StoreTxn,
    ic: &Interchange,
) -> Result<ImportSummary, SlashingError> {
    match tx.genesis_validators_root()? {
        Some(ours) if ours != ic.genesis_validators_root => {
            return Err(SlashingError::Interchange(format!(
                "the file is for the network with genesis validators root {}, this database \
                 protects {}",
                hex_root(&ic.genesis_validators_root),
                hex_root(&ours)
            )))
        }
        Some(_) => {}
        None => tx.set_genesis_validators_root(&ic.genesis_validators_root)?,
    }
    // Lock in pubkey order, like every batch, so concurrent writers cannot deadlock.
    let mut keys: Vec<&Pubkey> = ic.validators.iter().map(|v| &v.pubkey).collect();
    keys.sort();
    let mut ids = HashMap::with_capacity(keys.len());
    for k in keys {
        ids.insert(*k, tx.lock_validator(k)?);
    }
    let mut summary = ImportSummary {
        validators: ic.validators.len(),
        ..ImportSummary::default()
    };
    for history in &ic.validators {
        let v = ids
            .get(&history.pubkey)
            .copied()
            .ok_or_else(|| SlashingError::Store("validator lock lost".into()))?;
        import_validator(tx, v, history, &mut summary)?;
    }
    Ok(summary)
}

fn import_validator(
    tx: &mut dyn StoreTxn,
    v: ValidatorId,
    history: &ValidatorHistory,
    summary: &mut ImportSummary,
) -> Result<(), SlashingError> {
    let before = rules::effective_watermarks(tx, v)?;
    let (mut blocks, mut attestations, mut known) = (0, 0, 0);
    tx.savepoint()?;
    let conflict = record_all(tx, v, history, &mut blocks, &mut attestations, &mut known)?;
    let mut wm = tx.watermarks(v)?;
    let old = wm;
    match conflict {
        None => {
            tx.release_savepoint()?;
            summary.blocks_recorded += blocks;
            summary.attestations_recorded += attestations;
            summary.already_recorded += known;
            wm.raise(&before);
        }
        Some(reason) => {
            tx.rollback_savepoint()?;
            // The file's maxima bound everything it claims was signed: a new block above the
            // highest slot, or an attestation with source ≥ every source and target > every
            // target, conflicts with none of it.
            wm = tx.watermarks(v)?;
            wm.raise(&Watermarks {
                block_slot: history.blocks.iter().map(|b| b.slot).max(),
                attestation_source: history.attestations.iter().map(|a| a.source_epoch).max(),
                attestation_target: history.attestations.iter().map(|a| a.target_epoch).max(),
            });
            summary.minified.push(MinifiedValidator {
                pubkey: history.pubkey,
                reason,
            });
        }
    }
    if wm != old {
        tx.set_watermarks(v, &wm)?;
    }
    Ok(())
}

/// Record `history`'s records one by one; stop at the first conflict and describe it.
fn record_all(
    tx: &mut dyn StoreTxn,
    v: ValidatorId,
    history: &ValidatorHistory,
    blocks: &mut usize,
    attestations: &mut usize,
    known: &mut usize,
) -> Result<Option<String>, SlashingError> {
    for b in &history.blocks {
        match tx.block_at(v, b.slot)? {
            Some(root) if root == b.signing_root => *known += 1,
            Some(_) => {
                return Ok(Some(format!(
                    "two different blocks (or one without a signing root) at slot {}",
                    b.slot
                )))
            }
            None => {
                tx.insert_block(v, b)?;
                *blocks += 1;
            }
        }
    }
    for a in &history.attestations {
        let (s, t) = (a.source_epoch, a.target_epoch);
        if s > t {
            return Ok(Some(format!(
                "attestation {s}->{t} has its source after its target"
            )));
        }
        if let Some(e) = tx.attestation_at_target(v, t)? {
            if e.source_epoch == s && e.signing_root == a.signing_root {
                *known += 1;
                continue;
            }
            return Ok(Some(format!(
                "double vote: attestations {}->{t} and {s}->{t} (or one without a signing root)",
                e.source_epoch
            )));
        }
        if let Some(e) = tx.attestation_surrounded_by(v, s, t)? {
            return Ok(Some(format!(
                "attestation {s}->{t} surrounds {}->{}",
                e.source_epoch, e.target_epoch
            )));
        }
        if let Some(e) = tx.attestation_surrounding(v, s, t)? {
            return Ok(Some(format!(
                "attestation {s}->{t} is surrounded by {}->{}",
                e.source_epoch, e.target_epoch
            )));
        }
        tx.insert_attestation(v, a)?;
        *attestations += 1;
    }
    Ok(None)
}

/// Export the given validators (all when `None`; unknown pubkeys are skipped) as v5 JSON.
pub(crate) fn export(
    tx: &mut dyn StoreTxn,
    pubkeys: Option<&[Pubkey]>,
) -> Result<String, SlashingError> {
    let gvr = tx.genesis_validators_root()?.ok_or_else(|| {
        SlashingError::Interchange(
            "nothing to export: the database has not recorded a network (genesis validators \
             root) yet"
                .into(),
        )
    })?;
    let validators = match pubkeys {
        None => tx.validators()?,
        Some(list) => {
            let mut out: Vec<(ValidatorId, Pubkey)> = Vec::new();
            for pk in list {
                if let Some(id) = tx.find_validator(pk)? {
                    if !out.iter().any(|(seen, _)| *seen == id) {
                        out.push((id, *pk));
                    }
                }
            }
            out
        }
    };
    let mut data = Vec::with_capacity(validators.len());
    for (v, pubkey) in validators {
        let wm = tx.watermarks(v)?;
        let blocks = export_blocks(tx.blocks(v)?, wm.block_slot);
        let attestations = export_attestations(
            tx.attestations(v)?,
            wm.attestation_source,
            wm.attestation_target,
        );
        data.push(ValidatorJson {
            pubkey: format!("0x{}", hex::encode(pubkey)),
            signed_blocks: blocks
                .iter()
                .map(|b| BlockJson {
                    slot: b.slot.to_string(),
                    signing_root: b.signing_root.as_ref().map(hex_root),
                })
                .collect(),
            signed_attestations: attestations
                .iter()
                .map(|a| AttestationJson {
                    source_epoch: a.source_epoch.to_string(),
                    target_epoch: a.target_epoch.to_string(),
                    signing_root: a.signing_root.as_ref().map(hex_root),
                })
                .collect(),
        });
    }
    let file = InterchangeJson {
        metadata: MetadataJson {
            interchange_format_version: FORMAT_VERSION.into(),
            genesis_validators_root: hex_root(&gvr),
        },
        data,
    };
    serde_json::to_string_pretty(&file).map_err(|e| SlashingError::Interchange(e.to_string()))
}

/// Export exactly `pubkeys` (each registered), as [`export`] does. A database that has not
/// recorded a network yet holds no records at all: then each key is written with empty lists
/// under an all-zero genesis validators root (which no real network has).
pub(crate) fn export_keys(
    tx: &mut dyn StoreTxn,
    pubkeys: &[Pubkey],
) -> Result<String, SlashingError> {
    if tx.genesis_validators_root()?.is_some() {
        return export(tx, Some(pubkeys));
    }
    let file = InterchangeJson {
        metadata: MetadataJson {
            interchange_format_version: FORMAT_VERSION.into(),
            genesis_validators_root: hex_root(&[0u8; 32]),
        },
        data: pubkeys
            .iter()
            .map(|pk| ValidatorJson {
                pubkey: format!("0x{}", hex::encode(pk)),
                signed_blocks: Vec::new(),
                signed_attestations: Vec::new(),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&file).map_err(|e| SlashingError::Interchange(e.to_string()))
}

impl Interchange {
    /// True when the file records nothing (no block, no attestation): importing it would only
    /// pin the network.
    pub(crate) fn has_no_records(&self) -> bool {
        self.validators
            .iter()
            .all(|v| v.blocks.is_empty() && v.attestations.is_empty())
    }
}

/// Blocks to export: all, unless the watermark is above the lowest; then those from the
/// watermark up, with a root-less block at the watermark so that an importer's lowest slot is it.
fn export_blocks(blocks: Vec<BlockRecord>, watermark: Option<u64>) -> Vec<BlockRecord> {
    let lowest = blocks.first().map(|b| b.slot);
    match watermark {
        Some(w) if lowest.is_none_or(|low| w > low) => {
            let mut out: Vec<BlockRecord> = blocks.into_iter().filter(|b| b.slot >= w).collect();
            if out.first().map(|b| b.slot) != Some(w) {
                out.insert(
                    0,
                    BlockRecord {
                        slot: w,
                        signing_root: None,
                    },
                );
            }
            out
        }
        _ => blocks,
    }
}

/// Attestations to export: all, when the lowest records are the low watermarks (the format
/// has no other way to say them); otherwise one at the highest source and target known, which
/// no record or watermark of ours can conflict with.
fn export_attestations(
    atts: Vec<AttestationRecord>,
    wm_source: Option<u64>,
    wm_target: Option<u64>,
) -> Vec<AttestationRecord> {
    let min_source = atts.iter().map(|a| a.source_epoch).min();
    let min_target = atts.iter().map(|a| a.target_epoch).min();
    let exact = wm_source.is_none_or(|w| min_source.is_some_and(|m| w <= m))
        && wm_target.is_none_or(|w| min_target.is_some_and(|m| w <= m));
    if exact {
        return atts;
    }
    let max_source = max_opt(wm_source, atts.iter().map(|a| a.source_epoch).max());
    let max_target = max_opt(wm_target, atts.iter().map(|a| a.target_epoch).max());
    let source_epoch = max_source.unwrap_or(0);
    let target_epoch = max_target.unwrap_or(source_epoch);
    let signing_root = atts
        .iter()
        .find(|a| a.source_epoch == source_epoch && a.target_epoch == target_epoch)
        .and_then(|a| a.signing_root);
    vec![AttestationRecord {
        source_epoch,
        target_epoch,
        signing_root,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str = "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";
    const GVR: &str = "0x04700007fabc8282644aed6d1c7c9e21d38a03a0c4ba193f3afe428824b3a673";

    fn file(version: &str, gvr: &str, data: &str) -> String {
        format!(
            r#"{{"metadata":{{"interchange_format_version":"{version}","genesis_validators_root":"{gvr}"}},"data":[{data}]}}"#
        )
    }

    #[test]
    fn parses_the_eip_example() {
        let data = format!(
            r#"{{"pubkey":"{PK}","signed_blocks":[{{"slot":"81952","signing_root":"0x4ff6f743a43f3b4f95350831aeaf0a122a1a392922c45d804280284a69eb850b"}},{{"slot":"81951"}}],
            "signed_attestations":[{{"source_epoch":"2290","target_epoch":"3007","signing_root":"0x587d6a4f59a58fe24f406e0502413e77fe1babddee641fda30034ed37ecc884d"}},{{"source_epoch":"2290","target_epoch":"3008"}}]}}"#
        );
        let ic = parse(&file("5", GVR, &data)).unwrap();
        assert_eq!(ic.validators.len(), 1);
        let v = &ic.validators[0];
        assert_eq!(v.blocks.len(), 2);
        assert_eq!(v.blocks[1].signing_root, None);
        assert_eq!(v.attestations[0].target_epoch, 3007);
        assert!(v.attestations[0].signing_root.is_some());
    }

    #[test]
    fn rejects_malformed_files_with_the_place_named() {
        let block = |slot: &str| {
            format!(
                r#"{{"pubkey":"{PK}","signed_blocks":[{{"slot":{slot}}}],"signed_attestations":[]}}"#
            )
        };
        #[rustfmt::skip]
        let cases: &[(String, &str)] = &[
            (file("4", GVR, ""),                       "unsupported version"),
            (file("5", "0x1234", ""),                  "genesis_validators_root"),
            (file("5", GVR, &block("10")),             "not an EIP-3076"),      // unquoted number
            (file("5", GVR, &block("\"-1\"")),         "signed_blocks[0].slot"),
            (file("5", GVR, &block("\"+1\"")),         "signed_blocks[0].slot"),
            (file("5", GVR, &block("\"0x10\"")),       "signed_blocks[0].slot"),
            (file("5", GVR, &block("\"18446744073709551616\"")), "too large"),
            (file("5", GVR, &block("\"9223372036854775808\"")),  "supported maximum"),
            (file("5", GVR, r#"{"pubkey":"0xabcd","signed_blocks":[],"signed_attestations":[]}"#), "data[0].pubkey"),
            (file("5", GVR, &format!(r#"{{"pubkey":"{PK}","signed_blocks":[]}}"#)), "not an EIP-3076"),
            (file("5", GVR, &format!(r#"{{"pubkey":"{PK}","signed_blocks":[{{"slot":"1","signing_root":"0xzz"}}],"signed_attestations":[]}}"#)), "signing_root"),
            ("{".to_string(),                           "not an EIP-3076"),
        ];
        for (json, needle) in cases {
            let err = parse(json).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.contains(needle),
                "{json}\n  gave {err:?}, expected {needle:?}"
            );
        }
    }

    #[test]
    fn export_keeps_an_importer_at_least_as_strict_as_the_watermarks() {
        let b = |slot, r: Option<u8>| BlockRecord {
            slot,
            signing_root: r.map(|x| [x; 32]),
        };
        // No watermark above the lowest record: everything, unchanged.
        let all = vec![b(5, Some(1)), b(9, Some(2))];
        assert_eq!(export_blocks(all.clone(), None), all);
        assert_eq!(export_blocks(all.clone(), Some(5)), all);
        // Watermark 7 above record 5: from 7 up, with a root-less block at 7.
        assert_eq!(
            export_blocks(all.clone(), Some(7)),
            vec![b(7, None), b(9, Some(2))]
        );
        assert_eq!(export_blocks(all, Some(9)), vec![b(9, Some(2))]);
        assert_eq!(export_blocks(vec![], Some(3)), vec![b(3, None)]);

        let a = |s, t, r: Option<u8>| AttestationRecord {
            source_epoch: s,
            target_epoch: t,
            signing_root: r.map(|x| [x; 32]),
        };
        let all = vec![a(9, 21, Some(1))];
        assert_eq!(export_attestations(all.clone(), None, None), all);
        // A minified import of 10->20 over 9->21: one attestation at the maxima (10, 21).
        assert_eq!(
            export_attestations(all, Some(10), Some(20)),
            vec![a(10, 21, None)]
        );
        let all = vec![a(3, 4, Some(1)), a(4, 5, Some(2))];
        assert_eq!(
            export_attestations(all, Some(3), Some(5)),
            vec![a(4, 5, Some(2))]
        );
        assert_eq!(export_attestations(vec![], None, None), vec![]);
        assert_eq!(
            export_attestations(vec![], Some(5), Some(2)),
            vec![a(5, 2, None)]
        );
    }
}
