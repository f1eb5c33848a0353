//! Dispatch on controlled time, on one thread: a worker that hangs is timed out and the
//! request retried on another; requests go out in priority order and equal keys run once; a
//! worker that keeps failing is benched until its backoff has passed; and the same scenario
//! runs the same way every time. Time only moves when the test advances the manual clock; the
//! workers are scripted; PIPE's tasks run on the test's thread (`Tasks::inline` on a
//! current-thread runtime), so nothing happens between two of the test's steps but what
//! `settle` lets run.

use std::time::Duration;

use alloy_primitives::B256;
use pipe_inference_pool::{
    Pipe, PipeConfig, Priority,
    test_utils::{Behaviour, Harness, ScriptedWorker, call, settle},
};
use pipe_primitives::Tasks;

fn tip(tip: u128, arrival: u64) -> Priority {
    Priority::new(tip, arrival)
}

fn metric(pipe: &Pipe, line_start: &str) -> f64 {
    let text = pipe.render_metrics();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in\n{text}"))
}

#[tokio::test(flavor = "current_thread")]
async fn a_hanging_worker_times_out_on_the_clock_and_another_worker_answers() {
    let (a, a_runs) = ScriptedWorker::create("a", Behaviour::Hang);
    let (b, b_runs) = ScriptedWorker::create("b", Behaviour::Answer);
    let config = PipeConfig {
        worker_timeout_ms: 1_000,
        ..PipeConfig::default()
    };
    let h = Harness::new(vec![a, b], config, Tasks::inline());
    h.start();
    let k = call(1);
    h.pipe.enqueue(&k, B256::repeat_byte(0xaa), tip(1, 0));
    settle().await;
    assert_eq!(a_runs.lock().len(), 1);
    // Everything that can run has run; the manual clock has not moved: no timeout yet.
    assert!(b_runs.lock().is_empty());
    assert!(!h.pipe.cache().contains(&k.key));
    h.clock.advance(Duration::from_millis(999));
    settle().await;
    assert!(b_runs.lock().is_empty(), "timed out a millisecond early");
    h.clock.advance(Duration::from_millis(1));
    settle().await;
    assert!(
        h.pipe.cache().contains(&k.key),
        "b answers after a timed out"
    );
    assert_eq!(*b_runs.lock(), vec![k.key]);
    assert_eq!(metric(&h.pipe, "pipe_retries_total"), 1.0);
    assert_eq!(
        metric(&h.pipe, "pipe_worker_failures_total{worker=\"a\"}"),
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn requests_go_out_by_priority_and_equal_keys_run_once() {
    let (w, runs) = ScriptedWorker::create("w", Behaviour::Answer);
    let h = Harness::new(vec![w], PipeConfig::default(), Tasks::inline());
    let (k1, k2, k3) = (call(1), call(2), call(3));
    assert!(!h.pipe.enqueue(&k1, B256::repeat_byte(0xa1), tip(1, 0)));
    assert!(!h.pipe.enqueue(&k2, B256::repeat_byte(0xa2), tip(5, 1)));
    assert!(!h.pipe.enqueue(&k3, B256::repeat_byte(0xa3), tip(3, 2)));
    // A second transaction asking the same thing as the first, with a better tip: shared,
    // and the request moves up.
    assert!(h.pipe.enqueue(&k1, B256::repeat_byte(0xa4), tip(4, 3)));
    h.start();
    settle().await;
    assert_eq!(*runs.lock(), vec![k2.key, k1.key, k3.key]);
    h.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_worker_is_benched_until_its_backoff_passes() {
    let (w, runs) = ScriptedWorker::create("w", Behaviour::Fail);
    let config = PipeConfig {
        worker_max_failures: 3,
        worker_backoff_ms: 5_000,
        ..PipeConfig::default()
    };
    let h = Harness::new(vec![w], config, Tasks::inline());
    h.start();
    h.pipe.enqueue(&call(7), B256::repeat_byte(0xbb), tip(1, 0));
    settle().await;
    assert_eq!(runs.lock().len(), 3, "three failed attempts, then benched");
    assert_eq!(h.pipe.capacity(), 0);
    h.clock.advance(Duration::from_millis(4_999));
    settle().await;
    assert_eq!(runs.lock().len(), 3);
    h.clock.advance(Duration::from_millis(1));
    settle().await;
    assert_eq!(
        runs.lock().len(),
        4,
        "one probe after the backoff, which benches it again"
    );
    h.stop().await;
}

/// One scenario with every kind of worker and a mix of tips, shared keys, timeouts and
/// failures: what each worker ran, in what order, and when each result arrived.
async fn scenario() -> Vec<String> {
    let (fast, fast_runs) = ScriptedWorker::with_capacity("fast", Behaviour::Answer, 2);
    let (flaky, flaky_runs) = ScriptedWorker::with_capacity("flaky", Behaviour::Fail, 2);
    let (stuck, stuck_runs) = ScriptedWorker::with_capacity("stuck", Behaviour::Hang, 1);
    let config = PipeConfig {
        worker_timeout_ms: 300,
        worker_max_failures: 2,
        worker_backoff_ms: 700,
        ..PipeConfig::default()
    };
    let h = Harness::new(vec![fast, flaky, stuck], config, Tasks::inline());
    h.start();
    let mut log = Vec::new();
    for step in 0u64..40 {
        // A few requests per step, some asking again for an earlier key.
        for j in 0..3u64 {
            let n = ((step * 7 + j * 13) % 50) as u8;
            let waiter = B256::from(alloy_primitives::U256::from(step * 3 + j));
            h.pipe.enqueue(
                &call(n),
                waiter,
                tip(((step * 31 + j) % 11) as u128, step * 3 + j),
            );
        }
        settle().await;
        h.clock.advance(Duration::from_millis(100));
        settle().await;
        let done: Vec<u8> = (0..50u8)
            .filter(|n| h.pipe.cache().contains(&call(*n).key))
            .collect();
        log.push(format!("step {step}: cached {done:?}"));
    }
    for (name, runs) in [
        ("fast", fast_runs),
        ("flaky", flaky_runs),
        ("stuck", stuck_runs),
    ] {
        let runs: Vec<u8> = runs.lock().iter().map(|k| k[0]).collect();
        log.push(format!("{name} ran {runs:?}"));
    }
    h.stop().await;
    log
}

#[tokio::test(flavor = "current_thread")]
async fn the_same_scenario_runs_the_same_way_every_time() {
    let first = scenario().await;
    // The scenario did exercise every path: answers, failures and a timeout.
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("fast ran") && l.len() > 20)
    );
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("flaky ran") && l.len() > 20)
    );
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("stuck ran") && l.len() > 20)
    );
    for _ in 0..3 {
        assert_eq!(scenario().await, first);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_that_fails_everywhere_is_given_up_after_its_attempts() {
    let (a, a_runs) = ScriptedWorker::create("a", Behaviour::Fail);
    let (b, b_runs) = ScriptedWorker::create("b", Behaviour::Hang);
    let config = PipeConfig {
        worker_timeout_ms: 1_000,
        worker_max_failures: 100,
        max_attempts: 4,
        ..PipeConfig::default()
    };
    let h = Harness::new(vec![a, b], config, Tasks::inline());
    h.start();
    h.pipe.enqueue(&call(9), B256::repeat_byte(0xcc), tip(1, 0));
    for _ in 0..20 {
        settle().await;
        h.clock.advance(Duration::from_millis(1_000));
    }
    settle().await;
    // Four runs in all, across both workers, then no more however long time goes on.
    assert_eq!(a_runs.lock().len() + b_runs.lock().len(), 4);
    assert!(!h.pipe.cache().contains(&call(9).key));
    h.stop().await;
}
