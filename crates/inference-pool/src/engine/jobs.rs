//! Dispatch: queued requests sent to free worker slots by priority, runs in flight polled by
//! one task, results checked (key, attestation) before they enter the cache.

use super::*;

/// [`attest::verify`] on the head state; a VANILLA result without a signature needs no read.
pub(super) fn attested_now(
    store: &Store,
    enclave: &dyn attest::EnclaveCheck,
    mode: InferenceMode,
    result: &InferenceResult,
) -> Result<(), String> {
    if mode != InferenceMode::Tee && result.signature.is_empty() {
        return Ok(());
    }
    let view = store
        .state()
        .map_err(|e| format!("reading the registry: {e}"))?;
    attest::verify(mode, result, &view, enclave)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A finished run: the worker, the request's key, its kind of model, the result, and when it
/// started (ms).
pub(super) type JobDone = (
    usize,
    B256,
    ModelKind,
    Result<InferenceResult, WorkerError>,
    u64,
);

impl Pipe {
    pub(super) async fn dispatch_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut running: FuturesUnordered<BoxFuture<'static, JobDone>> = FuturesUnordered::new();
        loop {
            let now = self.clock.now_ms();
            for job in self.assign(now) {
                running.push(job);
            }
            let wake_at = {
                let st = self.state.lock();
                if st.requests.queued() > 0 {
                    st.workers.next_return(now)
                } else {
                    None
                }
            };
            let benched = async {
                match wake_at {
                    Some(t) => self.clock.sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.dispatch.notified() => {}
                Some(done) = running.next(), if !running.is_empty() => self.on_result(done),
                _ = benched => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Fills free worker slots with the best queued requests.
    pub(super) fn assign(&self, now: u64) -> Vec<BoxFuture<'static, JobDone>> {
        let mut jobs = Vec::new();
        let mut st = self.state.lock();
        let State {
            requests, workers, ..
        } = &mut *st;
        // Best first. A request no free worker can take (a TEE request needs a signer, a
        // language-model request a worker that runs them with a language-model slot free) is
        // stepped over, so it does not hold back the requests behind it; `skipped` counts
        // those left queued.
        let mut skipped = 0;
        while workers.any_free(now) {
            let Some(key) = requests.queued_desc().nth(skipped) else {
                break;
            };
            let Some(r) = requests.by_key.get(&key) else {
                break;
            };
            let need = Need::of(&r.call);
            let Some(w) = workers.pick(now, r.avoid, &need) else {
                skipped += 1;
                continue;
            };
            let Some(call) = requests.start(&key, w, now) else {
                break;
            };
            workers.start(w, &need);
            let slot = &workers.slots[w];
            let worker = slot.worker.clone();
            self.metrics
                .worker_in_flight
                .get_or_create(&label("worker", worker.name()))
                .set(slot.in_flight as i64);
            debug!(target: "pipe::dispatch", %key, worker = worker.name(), "dispatched");
            jobs.push(self.job(w, key, call, worker));
        }
        let running = requests.running() as i64;
        self.metrics.requests_in_flight.set(running);
        if running > self.metrics.requests_in_flight_peak.get() {
            self.metrics.requests_in_flight_peak.set(running);
        }
        jobs
    }

    pub(super) fn job(
        &self,
        w: usize,
        key: B256,
        call: Arc<InferenceCall>,
        worker: Arc<dyn Worker>,
    ) -> BoxFuture<'static, JobDone> {
        let clock = self.clock.clone();
        let timeout = self.config.worker_timeout_ms;
        let store = self.store.clone();
        let enclave = self.executor.enclave_check().clone();
        // A sampled VANILLA result of an audited worker is checked by a local run first.
        let audit = match (self.auditor.get(), self.tasks.get()) {
            (Some(auditor), Some(tasks))
                if call.mode == InferenceMode::Vanilla
                    && worker.audited()
                    && self.sampled(&key) =>
            {
                Some((auditor.clone(), tasks.clone(), call.clone()))
            }
            _ => None,
        };
        let metrics = self.metrics.clone();
        async move {
            let started = clock.now_ms();
            let mode = call.mode;
            let kind = call.model.kind;
            let run = worker.run(call);
            let result = tokio::select! {
                r = run => r,
                _ = clock.sleep_until(started + timeout) => Err(WorkerError::Timeout(timeout)),
            };
            let result = result.and_then(|r| {
                if r.key == key {
                    Ok(r)
                } else {
                    Err(WorkerError::WrongKey {
                        want: key,
                        got: r.key,
                    })
                }
            });
            // Only attested results are cached: the builder would refuse the others.
            let result = result.and_then(|r| {
                attested_now(&store, enclave.as_ref(), mode, &r)
                    .map_err(WorkerError::Unattested)?;
                Ok(r)
            });
            let result = match (result, audit) {
                (Ok(r), Some((auditor, tasks, call))) => {
                    metrics.audits.inc();
                    match tasks.blocking(move || auditor.recompute(&call)).await {
                        Ok(Ok(local)) if local.status != r.status || local.payload != r.payload => {
                            Err(WorkerError::Lied(format!(
                                "request {key}: {} bytes from the worker, {} from the node",
                                r.payload.len(),
                                local.payload.len()
                            )))
                        }
                        Ok(Ok(_)) => Ok(r),
                        // The node cannot run it now: the result stands unchecked.
                        Ok(Err(reason)) => {
                            debug!(target: "pipe::dispatch", %key, %reason, "audit skipped");
                            Ok(r)
                        }
                        Err(e) => {
                            debug!(target: "pipe::dispatch", %key, error = %e, "audit failed to run");
                            Ok(r)
                        }
                    }
                }
                (result, _) => result,
            };
            (w, key, kind, result, started)
        }
        .boxed()
    }

    /// Whether the result for `key` is audited: one in [`PipeConfig::audit_one_in`], chosen by
    /// a keyed hash a worker cannot predict.
    pub(super) fn sampled(&self, key: &B256) -> bool {
        let one_in = self.config.audit_one_in;
        if one_in == 0 {
            return false;
        }
        let mut salted = [0u8; 40];
        salted[..8].copy_from_slice(&self.audit_salt.to_le_bytes());
        salted[8..].copy_from_slice(key.as_slice());
        let h = alloy_primitives::keccak256(salted);
        u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) % one_in == 0
    }

    pub(super) fn on_result(&self, job: JobDone) {
        // Transactions to end once the state lock is released (ending takes it again and
        // tells the pool).
        if let Some((waiters, reason)) = self.record_result(job) {
            for hash in waiters {
                self.reject(hash, &reason);
            }
        }
    }

    /// Applies a finished run; returns the waiters to end when its request was given up.
    fn record_result(
        &self,
        (w, key, kind, result, started): JobDone,
    ) -> Option<(Vec<B256>, String)> {
        let now = self.clock.now_ms();
        let block = self.head.borrow().number();
        let mut st = self.state.lock();
        let State {
            txs,
            requests,
            workers,
            dirty,
            model_ms,
            ..
        } = &mut *st;
        let name = workers.slots[w].worker.name().to_string();
        // A run that was already going when its worker was caught lying: its word is worth
        // nothing either.
        let result = match result {
            Ok(_) if workers.slots[w].quarantined => Err(WorkerError::Failed(
                "the worker was quarantined while this ran".into(),
            )),
            other => other,
        };
        let ok = result.is_ok();
        workers.record(
            w,
            kind,
            ok,
            now,
            self.config.worker_max_failures,
            self.config.worker_backoff_ms,
        );
        self.metrics
            .worker_in_flight
            .get_or_create(&label("worker", &name))
            .set(workers.slots[w].in_flight as i64);
        match result {
            Ok(r) => {
                self.metrics
                    .dispatch_latency
                    .observe(now.saturating_sub(started) as f64 / 1000.0);
                self.metrics
                    .worker_completed
                    .get_or_create(&label("worker", &name))
                    .inc();
                self.cache.insert_from(r, block, Some(w));
                let elapsed = now.saturating_sub(started) as f64;
                let latency = &mut workers.slots[w].latency_ms;
                *latency = Some(latency.map_or(elapsed, |ms| moving_average(ms, elapsed)));
                if let Some(req) = requests.finish(&key) {
                    let ms = model_ms.entry(req.call.model.id).or_insert(elapsed);
                    *ms = moving_average(*ms, elapsed);
                    for waiter in req.waiters {
                        if let Some(e) = txs.get_mut(&waiter)
                            && e.phase == Phase::Awaiting(key)
                        {
                            e.phase = Phase::Pending;
                            dirty.insert(e.sender);
                        }
                    }
                }
                self.discover.notify_one();
            }
            Err(e) => {
                if matches!(e, WorkerError::Lied(_)) {
                    // Its word is worth nothing now: no more work, ever, and none of its
                    // results stand (a transaction that used one goes stale and runs again).
                    workers.quarantine(w);
                    let dropped = self.cache.evict_from(w);
                    if !dropped.is_empty() {
                        warn!(target: "pipe::dispatch", worker = %name, dropped = dropped.len(), "results of a quarantined worker dropped");
                    }
                    self.metrics
                        .worker_lies
                        .get_or_create(&label("worker", &name))
                        .inc();
                    error!(target: "pipe::dispatch", %key, worker = %name, error = %e, "worker caught lying by an audit; quarantined");
                    if workers.slots.iter().all(|s| s.quarantined) {
                        // Nobody left to run anything: every waiting transaction ends now,
                        // with the reason, rather than at its TTL.
                        let keys: Vec<B256> = requests.by_key.keys().copied().collect();
                        let mut waiters = Vec::new();
                        for k in keys {
                            if let Some(r) = requests.finish(&k) {
                                waiters.extend(r.waiters);
                            }
                        }
                        return Some((
                            waiters,
                            "no inference worker left: every worker was caught returning results that differ from the node's own runs".into(),
                        ));
                    }
                }
                warn!(target: "pipe::dispatch", %key, worker = %name, error = %e, "worker failed; retrying elsewhere");
                self.metrics
                    .worker_failures
                    .get_or_create(&label("worker", &name))
                    .inc();
                match requests.requeue(&key, w, self.config.max_attempts) {
                    Retry::Queued => {
                        self.metrics.retries.inc();
                    }
                    Retry::Dropped => {
                        debug!(target: "pipe::dispatch", %key, "nobody waits for it any more; not retried");
                    }
                    Retry::GaveUp(req) => {
                        let reason = format!(
                            "inference request {key} failed {} times on the workers (last: {e})",
                            req.attempts
                        );
                        warn!(target: "pipe::dispatch", %key, attempts = req.attempts, "request given up");
                        return Some((req.waiters.into_iter().collect(), reason));
                    }
                }
            }
        }
        None
    }
}
