//! The builder's and the chain's side of PIPE: readiness, results, stale reports, and the
//! finalized block (inclusions, expiry, carry-over, the next round of discovery).

use super::*;

impl InferenceGate for Pipe {
    fn is_ready(&self, tx: &PoolTx) -> bool {
        self.state
            .lock()
            .txs
            .get(&tx.hash())
            .is_some_and(|e| e.phase == Phase::Ready)
    }

    fn results(&self) -> Arc<dyn InferenceProvider> {
        self.results.clone()
    }

    fn on_stale(&self, tx: &PoolTx, call: &InferenceCall) {
        self.metrics.stale.inc();
        let number = self.head.borrow().number() + 1;
        let hash = tx.hash();
        let mut rejection = None;
        {
            let mut st = self.state.lock();
            let State {
                txs,
                requests,
                dirty,
                ..
            } = &mut *st;
            let Some(e) = txs.get_mut(&hash) else {
                return;
            };
            debug!(target: "pipe::builder", %hash, key = %call.key, "stale result: back to discovery");
            // A key the cache holds was refused by the builder: its result no longer passes
            // attestation (the worker left the registry). Computed again, by another worker.
            if let Some(cached) = self.cache.get(&call.key)
                && attested_now(
                    &self.store,
                    self.executor.enclave_check().as_ref(),
                    call.mode,
                    &cached,
                )
                .is_err()
            {
                self.cache.remove(&call.key);
            }
            e.stale += 1;
            e.deferred = Some(Deferral::Stale {
                block: number,
                key: call.key,
            });
            match self.stopped_at(hash, e, call, None, requests, dirty) {
                // The builder already knows the request: it is dispatched without another round.
                Ok(true) => self.dispatch.notify_one(),
                Ok(false) => {}
                Err(reason) => rejection = Some(reason),
            }
            dirty.insert(e.sender);
        }
        if let Some(reason) = rejection {
            self.reject(hash, &reason);
        }
        self.discover.notify_one();
    }

    fn on_finalized(&self, block: &Arc<SealedBlock>, stats: &BuildStats) {
        self.metrics.blocks.inc();
        self.metrics
            .block_build
            .observe(stats.build_ms as f64 / 1000.0);
        self.metrics
            .block_transactions
            .observe(block.transactions.len() as f64);
        // The pool has already handled the block: its events end the included transactions
        // and those whose nonce the block used, before anything else here looks at them.
        self.apply_pool_events();
        let number = block.number();
        let expired: Vec<(B256, u64)>;
        let mut deferred = 0u64;
        let live: Vec<B256> = {
            let mut st = self.state.lock();
            // Expiry: not included in the `tx_ttl_blocks` blocks since it arrived. Per
            // sender only the lowest such nonce is ended; its later ones go with it.
            let ttl = self.config.tx_ttl_blocks;
            expired = if ttl == 0 {
                Vec::new()
            } else {
                st.by_sender
                    .values()
                    .filter_map(|nonces| {
                        nonces.values().find_map(|h| {
                            let e = st.txs.get(h)?;
                            (number >= e.arrived_at + ttl).then_some((*h, e.arrived_at))
                        })
                    })
                    .collect()
            };
            // Carry-over: ready, yet not in this block (full, at its deadline, or ready too
            // late for it). It keeps its results and goes into a later block.
            let State { txs, dirty, .. } = &mut *st;
            for e in txs.values_mut().filter(|e| e.phase == Phase::Ready) {
                deferred += 1;
                e.deferred = Some(Deferral::CarriedOver { block: number });
            }
            // Senders with transactions still waiting for discovery get another pass on the
            // new state: an earlier transaction that was not executable in simulation (its
            // nonce just used, funds arriving in this block) stops nothing for good.
            let before = dirty.len();
            dirty.extend(
                txs.values()
                    .filter(|e| e.phase == Phase::Pending)
                    .map(|e| e.sender),
            );
            if dirty.len() > before {
                self.discover.notify_one();
            }
            txs.values().flat_map(|e| e.keys.iter().copied()).collect()
        };
        let mut ended = 0;
        for (hash, arrived_at) in expired {
            ended += self.end(
                hash,
                Lifecycle::Expired,
                &format!(
                    "not included within {} blocks (arrived at block {arrived_at}, expired at block {number})",
                    self.config.tx_ttl_blocks
                ),
            );
        }
        self.metrics.deferred.inc_by(deferred);
        self.metrics
            .block_deferred
            .observe((deferred + stats.stale as u64) as f64);
        self.metrics.block_expired.observe(ended as f64);
        let mut blocks = self.blocks.lock();
        if blocks.len() == BLOCK_HISTORY {
            blocks.pop_front();
        }
        blocks.push_back(BlockCongestion {
            number,
            included: block.transactions.len(),
            deferred: deferred + stats.stale as u64,
            expired: ended,
            build_ms: stats.build_ms,
        });
        drop(blocks);
        self.cache
            .expire(&live, number, self.config.result_ttl_blocks);
    }

    fn has_ready(&self) -> bool {
        self.state
            .lock()
            .txs
            .values()
            .any(|e| e.phase == Phase::Ready)
    }

    fn ready_changed(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.ready.notified())
    }
}
