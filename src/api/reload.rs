//! `POST /reload` (202, runs in the background; 409 while one runs) and `GET /reload` (status).
//! A reload re-reads the configuration, the signing policy and the key store, opens devices that
//! are new or whose open instance went stale (its token moved to another slot, or rejected a PIN
//! since fixed), keeps the others, and swaps the whole key set (and the policy) in one step; a
//! policy that does not build fails the reload and the old one stays.

use std::sync::Mutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::policy::Policy;
use crate::api::{AppState, Runtime};

#[derive(Debug, Default)]
pub(crate) struct ReloadState {
    inner: Mutex<Status>,
}

#[derive(Debug, Default, Clone)]
struct Status {
    state: &'static str,
    time: Option<String>,
    error: Option<String>,
}

fn now_rfc3339() -> String {
    // Seconds precision in UTC from the system clock, formatted by hand (no date crate).
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Re-read configuration, signing policy and keys; reuse open devices whose configuration did
/// not change. The policy is built before any device is opened: a mistake in it fails the
/// reload and changes nothing.
fn reload_runtime(app: &AppState) -> Result<(Runtime, Policy), String> {
    let config = app.reread_config().map_err(|e| e.to_string())?;
    let policy = Policy::build(&config, app.api_token.as_deref()).map_err(|e| e.to_string())?;
    let runtime = app.load_runtime(&config).map_err(|e| e.to_string())?;
    Ok((runtime, policy))
}

/// `POST /reload`.
pub async fn start(State(app): State<AppState>) -> Response {
    {
        let mut st = app.reload.inner.lock().unwrap_or_else(|p| p.into_inner());
        if st.state == "running" {
            return (
                StatusCode::CONFLICT,
                axum::Json(json!({"status": "error", "message": "A reload operation is already in progress. Please try again later."})),
            )
                .into_response();
        }
        *st = Status {
            state: "running",
            time: Some(now_rfc3339()),
            error: None,
        };
    }
    let bg = app.clone();
    tokio::spawn(async move {
        let app = bg.clone();
        // Keymanager imports and deletions wait for the reload, so neither undoes the other.
        let _write = app.key_gate.write.clone().lock_owned().await;
        let result = tokio::task::spawn_blocking(move || reload_runtime(&bg)).await;
        let status = match result {
            Ok(Ok((runtime, policy))) => {
                let errors = runtime.key_errors.len();
                app.swap(runtime);
                app.set_policy(policy);
                if errors == 0 {
                    Status {
                        state: "completed",
                        time: Some(now_rfc3339()),
                        error: None,
                    }
                } else {
                    Status {
                        state: "completed_with_errors",
                        time: Some(now_rfc3339()),
                        error: Some(format!(
                            "Reload completed with {errors} signer loading error(s)"
                        )),
                    }
                }
            }
            Ok(Err(e)) => Status {
                state: "failed",
                time: Some(now_rfc3339()),
                error: Some(format!("Reload failed: {e}")),
            },
            Err(e) => Status {
                state: "failed",
                time: Some(now_rfc3339()),
                error: Some(format!("Reload failed: {e}")),
            },
        };
        tracing::info!(state = status.state, error = ?status.error, "reload finished");
        *app.reload.inner.lock().unwrap_or_else(|p| p.into_inner()) = status;
    });
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "accepted", "message": "Reload operation accepted and is running in the background. Use GET /reload to check status."})),
    )
        .into_response()
}

/// `GET /reload`.
pub async fn status(State(app): State<AppState>) -> Response {
    let st = app
        .reload
        .inner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut body = json!({ "status": if st.state.is_empty() { "idle" } else { st.state } });
    if let Some(t) = st.time {
        body["lastOperationTime"] = t.into();
    }
    if let Some(e) = st.error {
        body["lastError"] = e.into();
    }
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_format_is_well_formed() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
    }
}
