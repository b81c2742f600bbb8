//! A fake beacon node answering only what the network cross-check reads (`genesis`, `spec`,
//! `fork_schedule`) with fixed JSON: the stand-in for tests about a node's *answers*. Tests
//! about a real chain run a real one (`tests/devnet.rs`).

use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

/// Serve `genesis`, `spec` and `fork_schedule` (each the `data` of its endpoint) on a free
/// loopback port until the process ends; the base URL.
pub fn serve_chain(genesis: Value, spec: Value, forks: Value) -> String {
    let data = |v: Value| move || async move { Json(serde_json::json!({ "data": v })) };
    serve_router(
        Router::new()
            .route("/eth/v1/beacon/genesis", get(data(genesis)))
            .route("/eth/v1/config/spec", get(data(spec)))
            .route("/eth/v1/config/fork_schedule", get(data(forks))),
    )
}

/// Serve `app` on a free loopback port from a thread of its own until the process ends; the
/// base URL.
pub fn serve_router(app: Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}")
}
