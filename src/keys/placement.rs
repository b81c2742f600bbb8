//! Where new keys go: a whole key on one device, or t-of-n shares one per device. The checks
//! here run before anything is opened or written, so a bad placement changes nothing.

use std::collections::HashSet;

use crate::config::Config;
use crate::devices::Devices;
use crate::error::{Result, SignerError};
use crate::keys::record::ShareId;
use crate::keys::threshold;

/// Parse `1,2,3` into share ids: non-zero integers (x = 0 is the group key).
pub(crate) fn parse_share_ids(list: &str) -> Result<Vec<ShareId>> {
    list.split(',')
        .map(|s| {
            let s = s.trim();
            let n: u64 = s.parse().map_err(|_| {
                SignerError::Placement(format!("share id {s:?} is not a non-negative integer"))
            })?;
            ShareId::new(n).ok_or_else(|| {
                SignerError::Placement(
                    "share id 0 is not allowed: ids are non-zero x-coordinates (x = 0 is the \
                     group key)"
                        .into(),
                )
            })
        })
        .collect()
}

/// Check a placement before anything is touched: 1 ≤ threshold ≤ devices, each device once,
/// ids (default 1..n) one per device and distinct. Returns the ids to use. Whether the devices
/// exist is the caller's check (against the configuration, or the open devices).
pub(crate) fn check_placement(
    threshold: usize,
    device_names: &[String],
    ids: Option<&[ShareId]>,
) -> Result<Vec<ShareId>> {
    crate::config::check_split(threshold, device_names)?;
    let n = device_names.len();
    let ids = match ids {
        Some(ids) => ids.to_vec(),
        None => threshold::default_ids(n),
    };
    if ids.len() != n {
        return Err(SignerError::Placement(format!(
            "{} share id(s) for {n} device(s): give one id per device",
            ids.len()
        )));
    }
    let mut seen = HashSet::new();
    for id in &ids {
        if !seen.insert(*id) {
            return Err(SignerError::Placement(format!(
                "share id {id} is listed twice"
            )));
        }
    }
    Ok(ids)
}

/// How to split keys t-of-n: the threshold, one device per share, and the share ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitPlan {
    /// Shares needed to sign.
    pub threshold: usize,
    /// One device per share.
    pub devices: Vec<String>,
    /// Share ids, one per device (default 1..n).
    pub ids: Option<Vec<ShareId>>,
}

impl SplitPlan {
    pub(crate) fn check(&self, devices: &Devices) -> Result<()> {
        check_placement(self.threshold, &self.devices, self.ids.as_deref())?;
        for d in &self.devices {
            devices.get(d)?;
        }
        Ok(())
    }
}

/// Where new keys go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// A whole key on one device.
    Whole(String),
    /// t-of-n shares, one per device.
    Split(SplitPlan),
}

/// Resolve the CLI's `--device` / `--devices` / `--threshold` / `--share-ids` against the
/// configuration, before any device is opened, so bad input changes nothing.
pub(crate) fn resolve_placement(
    config: &Config,
    device: Option<String>,
    devices: Vec<String>,
    threshold: Option<usize>,
    share_ids: Option<&str>,
) -> Result<Placement> {
    if device.is_some() && !devices.is_empty() {
        return Err(SignerError::Placement(
            "--device and --devices are mutually exclusive: --device keeps a whole key on one \
             device, --devices splits it across several"
                .into(),
        ));
    }
    if devices.is_empty() {
        if threshold.is_some_and(|t| t != 1) || share_ids.is_some() {
            return Err(SignerError::Placement(
                "--threshold and --share-ids need --devices (one device per share)".into(),
            ));
        }
        return Ok(Placement::Whole(
            device.unwrap_or_else(|| config.default_device.clone()),
        ));
    }
    let ids = share_ids.map(parse_share_ids).transpose()?;
    let threshold = threshold.unwrap_or(1);
    check_placement(threshold, &devices, ids.as_deref())?;
    for d in &devices {
        config.device(d)?;
    }
    Ok(Placement::Split(SplitPlan {
        threshold,
        devices,
        ids,
    }))
}

/// Where the Keymanager API puts imported keys: split as `[keymanager]` says, else whole on
/// `default_device`. The configuration checked the same rules when it was loaded
/// ([`crate::config::check_split`]).
pub(crate) fn keymanager_placement(config: &Config) -> Result<Placement> {
    let km = &config.keymanager;
    if km.devices.is_empty() && km.threshold.is_none() {
        return Ok(Placement::Whole(config.default_device.clone()));
    }
    config.check_keymanager_split()?;
    Ok(Placement::Split(SplitPlan {
        threshold: km.threshold.unwrap_or(1),
        devices: km.devices.clone(),
        ids: None,
    }))
}
