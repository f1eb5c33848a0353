//! Discovery: each marked sender's ready run simulated on the head state with the results
//! known so far, the requests it stops at queued, and transactions that cannot be served ended
//! with their reason.

use super::*;

impl Pipe {
    pub(super) async fn discovery_loop(
        self: Arc<Self>,
        tasks: Tasks,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = self.events.wake.notified() => {}
                _ = self.discover.notified() => {}
                _ = shutdown.changed() => return,
            }
            self.apply_pool_events();
            let this = self.clone();
            // Simulation is CPU work: off the async workers.
            if let Err(e) = tasks.blocking(move || this.discovery_pass()).await {
                warn!(target: "pipe::discovery", error = %e, "discovery pass panicked");
            }
        }
    }

    /// Simulates every dirty sender's pending run once.
    pub fn discovery_pass(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        // Counted under the state lock, with the take: `discovery_settled` never sees the
        // senders gone from `dirty` but the pass not yet counted.
        let dirty: Vec<Address> = {
            let mut st = self.state.lock();
            self.discovering.fetch_add(1, SeqCst);
            std::mem::take(&mut st.dirty).into_iter().collect()
        };
        struct Done<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _done = Done(&self.discovering);
        if dirty.is_empty() {
            return;
        }
        let head = self.head.borrow().clone();
        let view = match self.store.state() {
            Ok(v) => Arc::new(v),
            Err(e) => {
                warn!(target: "pipe::discovery", error = %e, "cannot read state; will retry");
                self.state.lock().dirty.extend(dirty);
                return;
            }
        };
        // The view may already be past `head` if a block just committed; the builder checks
        // every result again, so a simulation on a slightly different state costs at most a
        // re-simulation.
        let attrs = self
            .executor
            .next_attributes(&head, self.clock.now_ms(), Address::ZERO);
        let mut rejected: Vec<(B256, String)> = Vec::new();
        let mut new_requests = false;
        let mut became_ready = false;
        for sender in dirty {
            // The view may be ahead of the pool (a block committed, the pool not yet told):
            // transactions the view already executed are not simulated again.
            let on_chain = view.account(&sender).ok().flatten().map_or(0, |a| a.nonce);
            // A sender whose transactions still to decide are all plain transfers (no data, to
            // an account without code) asks nothing of the precompile: no code runs at all.
            // They are ready without a simulation, which would otherwise run the sender's
            // whole backlog again for every transfer that arrives (quadratic in the backlog,
            // on the cores that serve RPC).
            if self.ready_without_simulation(&sender, on_chain, &view, head.number()) {
                became_ready = true;
                continue;
            }
            let run: Vec<_> = self
                .pool
                .ready_run_of(&sender)
                .into_iter()
                .filter(|t| t.nonce() >= on_chain)
                .collect();
            if run.is_empty() {
                continue;
            }
            {
                let mut st = self.state.lock();
                for tx in &run {
                    if let Some(e) = st.txs.get_mut(&tx.hash())
                        && e.phase != Phase::Ready
                    {
                        e.phase = Phase::Simulating;
                    }
                }
            }
            let stored: Vec<StoredTx> = run.iter().map(|t| t.stored.clone()).collect();
            let outcomes = self.executor.simulate(
                view.clone(),
                &attrs,
                &stored,
                self.results.clone() as Arc<dyn InferenceProvider>,
            );
            self.metrics.simulations.inc();
            let mut st = self.state.lock();
            let State {
                txs,
                requests,
                dirty,
                by_sender,
                ..
            } = &mut *st;
            // The sender's live inference so far, for its caps.
            let mut load = SenderLoad::of(txs, by_sender.get(&sender));
            let outcomes = match outcomes {
                Ok(o) => o,
                Err(e) => {
                    warn!(target: "pipe::discovery", %sender, error = %e, "simulation failed; will retry");
                    dirty.insert(sender);
                    self.discover.notify_one();
                    continue;
                }
            };
            for (i, tx) in run.iter().enumerate() {
                let hash = tx.hash();
                let Some(entry) = txs.get_mut(&hash) else {
                    continue;
                };
                let Some(outcome) = outcomes.get(i) else {
                    // Waits for an earlier nonce of its sender.
                    if entry.phase != Phase::Ready {
                        entry.phase = Phase::Pending;
                    }
                    continue;
                };
                entry.simulations += 1;
                match outcome {
                    SimOutcome::Complete { keys, .. } => {
                        for k in keys {
                            if !entry.keys.contains(k) {
                                entry.keys.push(*k);
                            }
                        }
                        entry.phase = Phase::Ready;
                        entry.deferred = None;
                        entry.ready_at.get_or_insert(head.number());
                        became_ready = true;
                    }
                    // Not executable here (funds, nonce): the builder decides, with a reason.
                    SimOutcome::Invalid(_) => {
                        entry.phase = Phase::Ready;
                        became_ready = true;
                    }
                    SimOutcome::Underpaid { call, cost, price } => {
                        rejected.push((
                            hash,
                            format!(
                                "gas cannot cover inference: request {} on model {} costs {cost} gas at inference gas price {price} ({} cost units); raise the gas limit (eth_estimateGas includes it)",
                                call.key, call.model.id, call.units()
                            ),
                        ));
                    }
                    SimOutcome::Missing(call) => {
                        // Stopping again at a request it already made is the network's pace,
                        // not its doing (its sender's later nonces, another sender's block,
                        // re-ran the simulation): only a new request counts.
                        if !entry.keys.contains(&call.key) {
                            entry.rounds += 1;
                        }
                        if let Err(reason) = load.admit(entry, call, &self.config) {
                            rejected.push((hash, reason));
                            continue;
                        }
                        match self.stopped_at(
                            hash,
                            entry,
                            call,
                            Some(self.config.max_simulations),
                            requests,
                            dirty,
                        ) {
                            Ok(queued) => new_requests |= queued,
                            Err(reason) => rejected.push((hash, reason)),
                        }
                    }
                }
            }
        }
        for (hash, reason) in rejected {
            self.reject(hash, &reason);
        }
        if new_requests {
            self.dispatch.notify_one();
        }
        if became_ready {
            self.ready.notify_one();
        }
    }

    /// Marks `sender`'s run of consecutive nonces from `from` ready if each of them not ready
    /// yet is a plain transfer: a call with no data and no authorizations to an account without code
    /// (it cannot reach the precompile). False, touching nothing, when any is not.
    fn ready_without_simulation(
        &self,
        sender: &Address,
        from: u64,
        view: &StateView,
        head: u64,
    ) -> bool {
        use alloy_consensus::Transaction;
        let mut st = self.state.lock();
        let State { txs, by_sender, .. } = &mut *st;
        let Some(nonces) = by_sender.get(sender) else {
            return false;
        };
        // Only the run of consecutive nonces from the on-chain one: a transaction behind a
        // gap is not executable, so it is not ready whatever it does.
        let undecided: Vec<B256> = nonces
            .range(from..)
            .zip(from..)
            .take_while(|((nonce, _), want)| *nonce == want)
            .map(|((_, h), _)| *h)
            .filter(|h| txs.get(h).is_some_and(|e| e.phase != Phase::Ready))
            .collect();
        if undecided.is_empty() {
            return false;
        }
        let plain = |h: &B256| {
            self.pool.get(h).is_some_and(|t| {
                let tx = &t.stored.tx;
                tx.input().is_empty()
                    && tx.authorization_list().is_none()
                    && tx.to().is_some_and(|to| {
                        view.account(&to).is_ok_and(|a| {
                            a.is_none_or(|a| a.code_hash == alloy_primitives::KECCAK256_EMPTY)
                        })
                    })
            })
        };
        if !undecided.iter().all(plain) {
            return false;
        }
        for h in undecided {
            if let Some(e) = txs.get_mut(&h) {
                e.phase = Phase::Ready;
                e.deferred = None;
                e.ready_at.get_or_insert(head);
            }
        }
        true
    }

    /// `e` (transaction `hash`) stopped at `call`, which has no result. Records the key and
    /// queues the request, or sends the sender back to discovery if the result is already in.
    /// `Ok(true)` when a request was queued (dispatch must wake); `Err` is the reason the
    /// transaction is now over its bound on simulations, when given. (Requests per
    /// transaction are bounded by the precompile itself: the call past the bound reverts.)
    pub(super) fn stopped_at(
        &self,
        hash: B256,
        e: &mut TxEntry,
        call: &InferenceCall,
        max_simulations: Option<u32>,
        requests: &mut Requests,
        dirty: &mut BTreeSet<Address>,
    ) -> Result<bool, String> {
        if !e.keys.contains(&call.key) {
            e.keys.push(call.key);
        }
        if let Some(max) = max_simulations
            && e.rounds > max
        {
            return Err(format!(
                "transaction stopped at a missing inference result more than {max} times"
            ));
        }
        if call.mode == InferenceMode::Tee && !self.tee_workers {
            return Err(
                "TEE inference requested, but no worker of this node has a signing key".into(),
            );
        }
        if self.cache.contains(&call.key) {
            // The result arrived while this simulation ran.
            e.phase = Phase::Pending;
            dirty.insert(e.sender);
            return Ok(false);
        }
        // (After the cache: a result that came from elsewhere needs no worker.)
        if !self.served_kinds.contains(&call.model.kind) {
            return Err(format!(
                "a model of kind `{}` was requested, but no worker of this node runs that kind",
                call.model.kind.as_str()
            ));
        }
        e.phase = Phase::Awaiting(call.key);
        // Fairness at equal tips: behind the work already done for this transaction (its
        // requests before this one, which `e.units` counts with this one).
        let priority = Priority {
            consumed: e.units.saturating_sub(call.units()),
            ..e.priority
        };
        self.events.pinned.lock().insert(hash);
        if requests.wait_for(call, hash, priority) {
            self.metrics.shared_requests.inc();
        }
        Ok(true)
    }

    /// Rejects `hash` for good, with its sender's later transactions (they depend on it).
    pub(super) fn reject(&self, hash: B256, reason: &str) {
        self.end(hash, Lifecycle::Rejected, reason);
    }

    /// Ends `hash` for good (`Rejected` or `Expired`) with its sender's later transactions,
    /// which cannot be included without it: all leave the pool and the store's pending set,
    /// so the sender's pending nonce falls back and it can send again from there.
    /// Returns how many transactions ended.
    pub(super) fn end(&self, hash: B256, how: Lifecycle, reason: &str) -> usize {
        info!(target: "pipe::discovery", %hash, reason, status = how.as_str(), "transaction ended");
        // The pool forgets them and tells its listeners; PIPE records its own reasons below
        // (its queued copies of these events find nothing left to end). The state lock is
        // held across the removal, so the same bytes sent again in between are not tracked
        // and then ended here by mistake (the pool only ever takes the event queue's lock).
        let mut st = self.state.lock();
        let removed = self.pool.remove(&hash, reason);
        let verb = if how == Lifecycle::Expired {
            "expired"
        } else {
            "was rejected"
        };
        // Only what this call removed: a transaction already gone left for another reason,
        // which its queued event records.
        let mut ended = 0;
        for h in removed {
            ended += 1;
            let why = if h == hash {
                reason.to_string()
            } else {
                format!("an earlier transaction of the sender ({hash}) {verb}: {reason}")
            };
            if how == Lifecycle::Expired {
                self.metrics.expired.inc();
            } else {
                self.metrics.rejected.inc();
            }
            st.finish(
                h,
                final_status(h, how, None, Some(why)),
                self.config.finished_capacity,
            );
        }
        ended
    }
}
