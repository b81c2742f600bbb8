//! Where signing work runs: off the async runtime, never more at once per device than the
//! device's session cap. (Issue 5 grows this into the priority-aware, deadline-aware queue of
//! DESIGN §2; the interface — submit a job, await its signature — stays.)

use std::collections::HashMap;
use std::sync::Arc;

use blst::min_pk::Signature;
use tokio::sync::Semaphore;

use crate::devices::Devices;
use crate::error::SignerError;
use crate::keys::{sign_with_share, KeyRecord};

/// One signature to make.
#[derive(Debug, Clone)]
pub struct SignJob {
    /// The key.
    pub key: Arc<KeyRecord>,
    /// What to sign.
    pub signing_root: [u8; 32],
}

/// Why a job did not produce a signature.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A device needed is unavailable (503).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (500): integrity failure, BLS failure, …
    #[error("{0}")]
    Failed(SignerError),
}

impl From<SignerError> for JobError {
    fn from(e: SignerError) -> Self {
        match e {
            SignerError::Hsm(h) if h.is_unavailable() => JobError::Unavailable(h.to_string()),
            SignerError::Hsm(hsm::HsmError::Disabled(d)) => {
                JobError::Unavailable(format!("device {d} is disabled"))
            }
            other => JobError::Failed(other),
        }
    }
}

/// Runs signing jobs on blocking threads, one session-cap semaphore per device.
#[derive(Debug, Clone)]
pub struct Scheduler {
    devices: Devices,
    permits: Arc<HashMap<String, Arc<Semaphore>>>,
}

impl Scheduler {
    /// A scheduler over `devices`.
    pub fn new(devices: Devices) -> Scheduler {
        let permits = devices
            .iter()
            .map(|d| {
                (
                    d.name().to_owned(),
                    Arc::new(Semaphore::new(d.config().max_sessions)),
                )
            })
            .collect();
        Scheduler {
            devices,
            permits: Arc::new(permits),
        }
    }

    /// The devices it schedules on.
    pub fn devices(&self) -> &Devices {
        &self.devices
    }

    /// Sign `job`, waiting for a session on the key's device.
    pub async fn sign(&self, job: SignJob) -> Result<Signature, JobError> {
        if job.key.threshold != 1 {
            return Err(JobError::Failed(SignerError::Invalid(format!(
                "{} is a {}-of-{} threshold key; threshold signing is not available yet",
                job.key.pubkey,
                job.key.threshold,
                job.key.shares.len()
            ))));
        }
        let share = job.key.shares[0].clone();
        let device = self
            .devices
            .get(&share.device)
            .map_err(|e| JobError::Unavailable(e.to_string()))?
            .clone();
        let permits =
            self.permits.get(&share.device).cloned().ok_or_else(|| {
                JobError::Unavailable(format!("device {} is not open", share.device))
            })?;
        let _permit = permits
            .acquire_owned()
            .await
            .map_err(|_| JobError::Unavailable("scheduler is shutting down".into()))?;
        let key = job.key.clone();
        tokio::task::spawn_blocking(move || {
            sign_with_share(&device, &key.pubkey, &share, &job.signing_root)
        })
        .await
        .map_err(|e| JobError::Failed(SignerError::Invalid(format!("signing task failed: {e}"))))?
        .map_err(JobError::from)
    }
}
