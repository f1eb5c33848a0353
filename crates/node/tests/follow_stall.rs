//! A follower whose leader stops producing blocks says so: a warning when no block has
//! arrived for `STALL_WARN_MS` on the follower's clock, again each time that doubles, and the
//! silence in its status. The leader here is a stub that answers "no new block"; time is a
//! manual clock.

use std::{sync::Arc, time::Duration};

use axum::{Router, body::Bytes, http::header, routing::post};
use pipe_chain::test_utils::TestChain;
use pipe_node::{follow::Follower, models::NodeModels};
use pipe_primitives::{Clock, ManualClock, Tasks};
use serde_json::{Value, json};

/// A leader stuck at block 0.
async fn stuck_leader() -> String {
    let app = Router::new().route(
        "/",
        post(|body: Bytes| async move {
            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
            let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": "0x0"});
            (
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(&answer).unwrap(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Waits (briefly, in real time: the rounds are HTTP calls) for `f`.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_leader_is_reported_with_the_time_since_its_last_block() {
    let test = TestChain::new(1);
    let chain = Arc::new(test.chain());
    let models = Arc::new(NodeModels::open(test.store.clone(), Duration::from_secs(1)).unwrap());
    let clock = ManualClock::new(1_700_000_000_000);
    let follower = Arc::new(
        Follower::new(
            stuck_leader().await,
            chain,
            models,
            Arc::new(clock.clone()) as Arc<dyn Clock>,
            Tasks::new(),
        )
        .unwrap(),
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(follower.clone().run(Duration::from_secs(1), stop_rx));
    let interval = Duration::from_secs(1);
    // 29 s of silence: not yet worth a warning.
    for _ in 0..29 {
        clock.advance(interval);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually("29 s counted", || {
        follower.status().since_last_block_ms >= 29_000
    })
    .await;
    assert_eq!(follower.status().stall_warnings, 0);
    // Past 30 s: one warning.
    clock.advance(Duration::from_secs(2));
    eventually("the first warning", || {
        follower.status().stall_warnings == 1
    })
    .await;
    // Not again until the silence has doubled (60 s), then again at 120 s.
    clock.advance(Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(follower.status().stall_warnings, 1);
    clock.advance(Duration::from_secs(10));
    eventually("the second warning", || {
        follower.status().stall_warnings == 2
    })
    .await;
    assert!(follower.status().since_last_block_ms >= 60_000);
    assert_eq!(follower.status().leader_head, 0);
    stop.send(true).unwrap();
    task.await.unwrap();
}
