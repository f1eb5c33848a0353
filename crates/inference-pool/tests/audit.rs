//! A worker's word is checked: sampled VANILLA results of remote workers are run again on the
//! node, and a worker whose result differs is quarantined, its result never used, the request
//! run elsewhere. One thread, a manual clock, scripted workers, a fixed audit salt.

use std::sync::Arc;

use alloy_primitives::{B256, U256};
use pipe_inference_pool::{
    Pipe, PipeConfig, Priority,
    test_utils::{Behaviour, Harness, HonestAuditor, ScriptedWorker, call, settle},
};
use pipe_primitives::Tasks;

fn metric(pipe: &Pipe, line_start: &str) -> f64 {
    let text = pipe.render_metrics();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn forged(pipe: &Pipe, keys: &[u8]) -> usize {
    keys.iter()
        .filter(|n| {
            pipe.cache()
                .get(&call(**n).key)
                .is_some_and(|r| r.payload.as_ref() == b"forged")
        })
        .count()
}

/// A liar and an honest worker; requests `0..count` one at a time, the liar preferred while
/// it is in service (it is listed first and idle). Returns how many forged results were
/// usable (cached) before the liar was caught, how many are still cached at the end, and
/// whether the liar was quarantined.
async fn run(one_in: u64, seed: u64, count: u8) -> (usize, usize, bool) {
    let (liar, _) = ScriptedWorker::create("liar", Behaviour::Lie);
    let (honest, _) = ScriptedWorker::create("honest", Behaviour::Answer);
    let config = PipeConfig {
        audit_one_in: one_in,
        audit_seed: Some(seed),
        ..PipeConfig::default()
    };
    let h = Harness::new(vec![liar, honest], config, Tasks::inline());
    h.pipe.set_auditor(Arc::new(HonestAuditor));
    h.start();
    let keys: Vec<u8> = (0..count).collect();
    let mut usable = 0;
    for (i, n) in keys.iter().enumerate() {
        let waiter = B256::from(U256::from(i));
        h.pipe
            .enqueue(&call(*n), waiter, Priority::new(1, i as u64));
        settle().await;
        assert!(
            h.pipe.cache().contains(&call(*n).key),
            "request {n} answered"
        );
        usable += forged(&h.pipe, &[*n]);
    }
    let caught = metric(&h.pipe, "pipe_worker_lies_total{worker=\"liar\"}") == 1.0;
    let out = (usable, forged(&h.pipe, &keys), caught);
    h.stop().await;
    out
}

#[tokio::test(flavor = "current_thread")]
async fn auditing_every_result_lets_no_forged_result_through() {
    let (usable, left, caught) = run(1, 7, 10).await;
    assert_eq!((usable, left), (0, 0));
    assert!(caught, "the liar is quarantined at its first result");
}

#[tokio::test(flavor = "current_thread")]
async fn a_sample_catches_a_liar_after_a_few_forged_results() {
    // One result in four audited: a worker forging every result has a geometric number of
    // them usable before the first audit, 3 on average; once caught, none is left. Measured
    // over 200 salts.
    let mut total = 0;
    let mut worst = 0;
    for seed in 0..200 {
        let (usable, left, caught) = run(4, seed, 40).await;
        assert!(caught, "seed {seed}: 40 results and never audited");
        assert_eq!(left, 0, "seed {seed}: a quarantined worker's results stay");
        total += usable;
        worst = worst.max(usable);
    }
    let mean = total as f64 / 200.0;
    eprintln!(
        "audit 1 in 4: forged results usable before quarantine: mean {mean:.2}, worst {worst}"
    );
    assert!((2.0..=4.0).contains(&mean), "mean {mean}");
}

#[tokio::test(flavor = "current_thread")]
async fn without_an_auditor_or_with_audits_off_nothing_is_checked() {
    let (usable, _, caught) = run(0, 1, 5).await;
    assert!(!caught);
    assert!(usable > 0, "audits off: the liar's results are used");
}

#[tokio::test(flavor = "current_thread")]
async fn results_a_liar_returns_after_it_is_caught_are_not_used() {
    // The liar runs four requests at once: when one is caught, the others it was running
    // come back from a quarantined worker and are not used either.
    for seed in 0..50 {
        let (liar, _) = ScriptedWorker::with_capacity("liar", Behaviour::Lie, 4);
        let (honest, _) = ScriptedWorker::create("honest", Behaviour::Answer);
        let config = PipeConfig {
            audit_one_in: 3,
            audit_seed: Some(seed),
            ..PipeConfig::default()
        };
        let h = Harness::new(vec![liar, honest], config, Tasks::inline());
        h.pipe.set_auditor(Arc::new(HonestAuditor));
        let keys: Vec<u8> = (0..24).collect();
        for (i, n) in keys.iter().enumerate() {
            let tip = Priority::new(1, i as u64);
            h.pipe.enqueue(&call(*n), B256::from(U256::from(i)), tip);
        }
        h.start();
        settle().await;
        settle().await;
        let caught = metric(&h.pipe, "pipe_worker_lies_total{worker=\"liar\"}") >= 1.0;
        assert!(caught, "seed {seed}");
        assert_eq!(
            forged(&h.pipe, &keys),
            0,
            "seed {seed}: a forged result is cached"
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn when_every_worker_is_caught_the_waiting_requests_are_given_up() {
    let (liar, runs) = ScriptedWorker::create("liar", Behaviour::Lie);
    let config = PipeConfig {
        audit_one_in: 1,
        ..PipeConfig::default()
    };
    let h = Harness::new(vec![liar], config, Tasks::inline());
    h.pipe.set_auditor(Arc::new(HonestAuditor));
    h.start();
    let tip = Priority::new(1, 0);
    h.pipe.enqueue(&call(1), B256::repeat_byte(0xa1), tip);
    settle().await;
    assert_eq!(runs.lock().len(), 1);
    assert_eq!(h.pipe.capacity(), 0, "quarantined");
    // The request is gone (its waiters were ended), not queued for nobody: asking again
    // starts a new one.
    assert!(!h.pipe.enqueue(&call(1), B256::repeat_byte(0xa2), tip));
    h.stop().await;
}
