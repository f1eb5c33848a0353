//! Admission: the one way into the pool (RPC, restore, tests): the checks, the durable
//! write, replacement and eviction.

use super::*;

/// Executable transactions, or those behind a nonce gap.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ready,
    Queued,
}

/// What admitting a transaction takes: the one it replaces, or the one it evicts from a full
/// pool.
#[derive(Default)]
struct Admission {
    replaced: Option<Arc<PoolTx>>,
    evicted: Option<Arc<PoolTx>>,
}

impl Pool {
    /// Checks that need no state: decodes nothing, only looks at the envelope. Returns the
    /// recovered sender.
    pub fn check_stateless(
        &self,
        tx: &TxEnvelope,
        encoded_len: usize,
    ) -> Result<Address, PoolError> {
        self.check_stateless_as(tx, encoded_len, true)
    }

    /// [`Pool::check_stateless`]; `admitting` false when restoring what was admitted before,
    /// which takes an impersonated sender whether or not it is still impersonated.
    fn check_stateless_as(
        &self,
        tx: &TxEnvelope,
        encoded_len: usize,
        admitting: bool,
    ) -> Result<Address, PoolError> {
        let hash = *tx.tx_hash();
        let err = |kind| PoolError { hash, kind };
        if encoded_len > self.config.max_tx_size {
            return Err(err(PoolErrorKind::Oversized {
                size: encoded_len,
                limit: self.config.max_tx_size,
            }));
        }
        if tx.is_eip4844() {
            // This chain carries no blobs.
            return Err(err(PoolErrorKind::UnsupportedType));
        }
        if let Some(id) = tx.chain_id()
            && id != self.config.chain_id
        {
            return Err(err(PoolErrorKind::WrongChainId {
                have: id,
                want: self.config.chain_id,
            }));
        }
        if tx.gas_limit() > self.config.block_gas_limit {
            return Err(err(PoolErrorKind::GasLimitExceedsBlock));
        }
        if tx.gas_limit() > pipe_executor::TX_GAS_LIMIT_CAP {
            return Err(err(PoolErrorKind::GasLimitExceedsCap {
                tx: tx.gas_limit(),
                cap: pipe_executor::TX_GAS_LIMIT_CAP,
            }));
        }
        if let Some(tip) = tx.max_priority_fee_per_gas()
            && tip > tx.max_fee_per_gas()
        {
            return Err(err(PoolErrorKind::TipAboveFeeCap));
        }
        let unsigned = pipe_primitives::edits::impersonated_sender(tx).filter(|claimed| {
            self.config.dev_impersonation && (!admitting || self.impersonates(claimed))
        });
        let sender = match unsigned {
            Some(sender) => sender,
            None => tx
                .recover_signer()
                .map_err(|e| err(PoolErrorKind::InvalidSignature(e.to_string())))?,
        };
        let want = pipe_executor::intrinsic_gas(tx, sender);
        if tx.gas_limit() < want {
            return Err(err(PoolErrorKind::IntrinsicGasTooLow {
                have: tx.gas_limit(),
                want,
            }));
        }
        Ok(sender)
    }

    /// Validates `tx` (sent by `sender`, already checked by [`Pool::check_stateless`]) against
    /// the sender's head state and the current base fee, and adds it. Returns the hashes of
    /// transactions it replaced.
    pub fn add(
        &self,
        tx: TxEnvelope,
        sender: Address,
        state: SenderState,
        base_fee: u64,
    ) -> Result<Option<B256>, PoolError> {
        let hash = *tx.tx_hash();
        let mut inner = self.inner.write();
        let Admission { replaced, evicted } =
            self.check_in(&inner, &tx, sender, state, base_fee)?;
        if let Some(victim) = &evicted {
            inner.take(victim);
            self.emit(PoolEvent::Removed {
                hash: victim.hash(),
                reason: RemovalReason::Evicted { by: hash },
            });
            self.forget(vec![victim.hash()]);
        }
        let encoded = Bytes::from(tx.encoded_2718());
        let nonce = tx.nonce();
        let arrival = inner.next_arrival;
        inner.next_arrival += 1;
        let pooled = Arc::new(PoolTx {
            stored: StoredTx { hash, sender, tx },
            encoded,
            arrival,
        });
        if let Some(old) = &replaced {
            inner.by_hash.remove(&old.hash());
        }
        inner.by_hash.insert(hash, pooled.clone());
        inner
            .by_sender
            .entry(sender)
            .or_default()
            .insert(nonce, pooled.clone());
        if let Some(old) = &replaced {
            inner.cost_out(old);
        }
        inner.cost_in(&pooled);
        // Under the pool's lock, so listeners see events in pool order.
        let replaced = replaced.map(|r| r.hash());
        if let Some(old) = replaced {
            self.emit(PoolEvent::Removed {
                hash: old,
                reason: RemovalReason::Replaced { by: hash },
            });
            self.forget(vec![old]);
        }
        self.emit(PoolEvent::Added {
            tx: pooled,
            replaced,
        });
        // Never move a sender's known nonce backwards: `state` may predate a block that
        // committed while this transaction was being validated.
        let known = inner.state_nonce.entry(sender).or_default();
        *known = (*known).max(state.nonce);
        inner.recount(&sender);
        drop(inner);
        self.arrivals.notify_waiters();
        self.arrivals.notify_one();
        Ok(replaced)
    }

    /// The stateful checks of [`Pool::add`] against the pool as it is, without adding:
    /// what would be refused, and which transaction would be replaced.
    fn check_in(
        &self,
        inner: &Inner,
        tx: &TxEnvelope,
        sender: Address,
        state: SenderState,
        base_fee: u64,
    ) -> Result<Admission, PoolError> {
        let hash = *tx.tx_hash();
        let err = |kind| PoolError { hash, kind };
        let nonce = tx.nonce();
        // The caller's state may predate a block the pool has already seen (a submission
        // waits for its fsync while blocks finalize): the newer nonce wins.
        let state = SenderState {
            nonce: state
                .nonce
                .max(inner.state_nonce.get(&sender).copied().unwrap_or_default()),
            ..state
        };
        if nonce < state.nonce {
            return Err(err(PoolErrorKind::NonceTooLow {
                tx: nonce,
                state: state.nonce,
            }));
        }
        if nonce > state.nonce + self.config.max_nonce_gap {
            return Err(err(PoolErrorKind::NonceTooHigh {
                tx: nonce,
                state: state.nonce,
                limit: self.config.max_nonce_gap,
            }));
        }
        if tx.max_fee_per_gas() < base_fee as u128 {
            return Err(err(PoolErrorKind::FeeCapBelowBaseFee {
                fee_cap: tx.max_fee_per_gas(),
                base_fee,
            }));
        }
        let cost = worst_case_cost(tx);
        if cost > state.balance {
            return Err(err(PoolErrorKind::InsufficientFunds {
                balance: state.balance.to_string(),
                cost: cost.to_string(),
            }));
        }
        if inner.by_hash.contains_key(&hash) {
            return Err(err(PoolErrorKind::AlreadyKnown));
        }
        let queue_len = inner.by_sender.get(&sender).map_or(0, |q| q.len());
        let replaced = inner
            .by_sender
            .get(&sender)
            .and_then(|q| q.get(&nonce))
            .cloned();
        if let Some(old) = &replaced {
            let bump = |old: u128| old + old * self.config.price_bump / 100;
            let old_tx = &old.stored.tx;
            let new_tip = tx
                .max_priority_fee_per_gas()
                .unwrap_or(tx.max_fee_per_gas());
            let old_tip = old_tx
                .max_priority_fee_per_gas()
                .unwrap_or(old_tx.max_fee_per_gas());
            if tx.max_fee_per_gas() < bump(old_tx.max_fee_per_gas()) || new_tip < bump(old_tip) {
                return Err(err(PoolErrorKind::ReplacementUnderpriced));
            }
            for l in self.listeners.read().iter() {
                l.may_replace(&old.hash())
                    .map_err(|reason| err(PoolErrorKind::ReplacementRefused(reason)))?;
            }
        }
        // Admission pays the worst case: every pending transaction of the sender using all
        // its gas at its fee cap (inference gas included) must fit the balance together, so
        // what the builder will meet is funded and a sender cannot queue work it cannot pay.
        let mine = inner.cost.get(&sender).copied().unwrap_or_default();
        let others = match &replaced {
            Some(old) => mine.saturating_sub(worst_case_cost(&old.stored.tx)),
            None => mine,
        };
        let total = others.saturating_add(cost);
        if total > state.balance {
            return Err(err(PoolErrorKind::Overdraft {
                balance: state.balance.to_string(),
                total: total.to_string(),
            }));
        }
        if replaced.is_some() {
            return Ok(Admission {
                replaced,
                evicted: None,
            });
        }
        if queue_len >= self.config.max_per_sender {
            return Err(err(PoolErrorKind::SenderFull(queue_len)));
        }
        // Behind a nonce gap: not executable, so bounded apart and first to go.
        let known = inner
            .state_nonce
            .get(&sender)
            .copied()
            .unwrap_or_default()
            .max(state.nonce);
        let queued = nonce > known + inner.ready_len(&sender) as u64;
        let mut evicted = None;
        if queued {
            let mine = inner.queued.get(&sender).copied().unwrap_or(0);
            if mine >= self.config.max_queued_per_sender {
                return Err(err(PoolErrorKind::SenderQueueFull {
                    queued: mine,
                    limit: self.config.max_queued_per_sender,
                }));
            }
            if inner.queued_total >= self.config.max_queued_total {
                let victim = self.victim(inner, tx, sender, base_fee, Kind::Queued, true);
                evicted = Some(victim.ok_or(err(PoolErrorKind::PoolFull))?);
            }
        }
        if evicted.is_none() && inner.by_hash.len() >= self.config.max_total {
            // Future-nonce transactions go first: an executable newcomer takes the place of
            // any of them, a future-nonce one must outbid it. Then an executable newcomer may
            // push out the cheapest executable transaction nothing depends on, if it pays
            // more.
            let victim = self
                .victim(inner, tx, sender, base_fee, Kind::Queued, queued)
                .or_else(|| {
                    if queued {
                        None
                    } else {
                        self.victim(inner, tx, sender, base_fee, Kind::Ready, true)
                    }
                });
            evicted = Some(victim.ok_or(err(PoolErrorKind::PoolFull))?);
        }
        Ok(Admission {
            replaced: None,
            evicted,
        })
    }

    /// The transaction `tx` may evict: among future-nonce transactions the lowest fee cap,
    /// newest first; among executable ones the last of each sender's run (nothing depends on
    /// it) with the lowest effective tip at `base_fee`. Never one of `sender`'s own. With
    /// `outbid`, only if `tx` pays more. Linear in the pool's size; it runs only when the
    /// pool is full.
    fn victim(
        &self,
        inner: &Inner,
        tx: &TxEnvelope,
        sender: Address,
        base_fee: u64,
        kind: Kind,
        outbid: bool,
    ) -> Option<Arc<PoolTx>> {
        let queued = kind == Kind::Queued;
        let price = |t: &TxEnvelope| -> u128 {
            if queued {
                t.max_fee_per_gas()
            } else {
                t.effective_tip_per_gas(base_fee).unwrap_or_default()
            }
        };
        let candidates = inner
            .by_sender
            .iter()
            .filter(|(s, _)| **s != sender)
            .flat_map(|(s, q)| {
                let start = inner.state_nonce.get(s).copied().unwrap_or_default();
                let ready = ready_run(q, start).count();
                // A sender's highest nonce only: nothing in the pool depends on it.
                let picked: Vec<&Arc<PoolTx>> = if queued {
                    q.values().skip(ready).last().into_iter().collect()
                } else if ready == q.len() && ready > 0 {
                    q.values().nth(ready - 1).into_iter().collect()
                } else {
                    Vec::new()
                };
                picked
            });
        let victim =
            candidates.min_by_key(|t| (price(&t.stored.tx), std::cmp::Reverse(t.arrival)))?;
        (!outbid || price(tx) > price(&victim.stored.tx)).then(|| victim.clone())
    }

    /// Admits a transaction from its EIP-2718 bytes: decodes it, runs the stateless checks,
    /// reads its sender's state with `state_of` (nonce and balance at the head) and adds it
    /// for a block with `base_fee`. Returns its hash. RPC and the restart of persisted
    /// transactions both come in here, so both apply the same rules.
    pub fn admit<E>(
        &self,
        raw: &[u8],
        base_fee: u64,
        state_of: impl FnOnce(&Address) -> Result<SenderState, E>,
    ) -> Result<B256, AdmitError<E>> {
        let tx = TxEnvelope::decode_2718_exact(raw).map_err(AdmitError::Undecodable)?;
        let sender = self.check_stateless(&tx, raw.len())?;
        let state = state_of(&sender).map_err(AdmitError::State)?;
        let hash = *tx.tx_hash();
        self.add(tx, sender, state, base_fee)?;
        Ok(hash)
    }

    /// [`Pool::admit`] for a transaction that is to be acknowledged: on a pool with a journal
    /// it is checked, written durably (a batch of submissions shares one fsync), and only
    /// then added, so an acknowledged transaction survives a crash and nothing not durable is
    /// ever built on. `AdmitError::Persist` when it cannot be written.
    pub async fn submit<E>(
        &self,
        raw: &[u8],
        base_fee: u64,
        state_of: impl FnOnce(&Address) -> Result<SenderState, E>,
    ) -> Result<B256, AdmitError<E>> {
        let Some(journal) = &self.journal else {
            return self.admit(raw, base_fee, state_of);
        };
        let tx = TxEnvelope::decode_2718_exact(raw).map_err(AdmitError::Undecodable)?;
        let sender = self.check_stateless(&tx, raw.len())?;
        let state = state_of(&sender).map_err(AdmitError::State)?;
        let hash = *tx.tx_hash();
        // Checked before the write so junk never costs an fsync; checked again when added,
        // as the pool may have changed meanwhile.
        self.check_in(&self.inner.read(), &tx, sender, state, base_fee)?;
        // The same bytes already being written: their outcome is this one's too. Pending
        // then means acknowledged; if that submission failed, this one tries for itself.
        loop {
            let first = {
                let mut in_flight = self.in_flight.lock();
                match in_flight.get(&hash) {
                    Some(done) => Some(done.subscribe()),
                    None => {
                        in_flight.insert(hash, tokio::sync::watch::channel(false).0);
                        None
                    }
                }
            };
            let Some(mut done) = first else { break };
            let _ = done.wait_for(|d| *d).await;
            if self.get(&hash).is_some() {
                return Ok(hash);
            }
            self.check_in(&self.inner.read(), &tx, sender, state, base_fee)?;
        }
        // From here the row may be written: if this future is dropped before the
        // transaction is added (the client went away), the row is forgotten again (the
        // deletion is queued behind the write, so it wins).
        let mut guard = Unwritten {
            pool: self,
            hash,
            armed: true,
        };
        let written = journal.put(hash, Bytes::copy_from_slice(raw)).await;
        if let Err(e) = written {
            guard.armed = false;
            return Err(AdmitError::Persist(e));
        }
        let added = self.add(tx, sender, state, base_fee);
        // Added: the pool owns the row now. Refused: forget it, unless the same bytes are
        // pending already (admitted another way), whose row it is.
        guard.armed = matches!(&added, Err(e) if e.kind != PoolErrorKind::AlreadyKnown);
        drop(guard);
        added?;
        Ok(hash)
    }

    /// Puts the persisted transactions back, through the same checks as a submission, against
    /// the state `state_of` reads; forgets those no longer valid.
    pub fn restore<E: std::fmt::Display>(
        &self,
        base_fee: u64,
        state_of: impl Fn(&Address) -> Result<SenderState, E>,
    ) -> Result<Restored, PersistError> {
        let Some(journal) = &self.journal else {
            return Ok(Restored::default());
        };
        // The stateless checks (signature recovery above all) once per transaction, on
        // every core: they are most of a restart's cost.
        let raws = journal.store().load()?;
        let mut checked = self.check_all(raws);
        // Lowest nonce first per sender, so no transaction waits behind a gap that is only a
        // matter of order.
        checked.sort_by_key(|(_, c)| c.as_ref().ok().map(|(tx, sender)| (*sender, tx.nonce())));
        let mut report = Restored::default();
        let mut stale = Vec::new();
        for (raw, c) in checked {
            let added = c.and_then(|(tx, sender)| {
                let state = state_of(&sender)
                    .map_err(|e| format!("reading a sender's state: {e}"))
                    .map_err(RestoreFault::State)?;
                self.add(tx, sender, state, base_fee)
                    .map(|_| ())
                    .map_err(RestoreFault::Pool)
            });
            match added {
                Ok(()) => report.restored += 1,
                Err(RestoreFault::Pool(e)) if e.kind == PoolErrorKind::AlreadyKnown => {}
                // Not a fact about the transaction: stop rather than forget it.
                Err(RestoreFault::State(e)) => return Err(PersistError(e)),
                Err(e) => {
                    tracing::debug!(target: "pipe::pool", error = %e.describe(), "persisted transaction dropped");
                    report.dropped += 1;
                    stale.push(alloy_primitives::keccak256(raw.as_ref()));
                }
            }
        }
        self.forget(stale);
        Ok(report)
    }
}

/// A persisted transaction after the stateless checks: the transaction and its sender.
type Checked = Result<(TxEnvelope, Address), RestoreFault>;

/// Why a persisted transaction did not come back.
#[derive(Debug)]
enum RestoreFault {
    Undecodable,
    Stateless(PoolError),
    State(String),
    Pool(PoolError),
}

impl RestoreFault {
    fn describe(&self) -> String {
        match self {
            RestoreFault::Undecodable => "undecodable".into(),
            RestoreFault::Stateless(e) | RestoreFault::Pool(e) => e.to_string(),
            RestoreFault::State(e) => e.clone(),
        }
    }
}

impl Pool {
    /// Decodes and runs the stateless checks on each of `raws`, spread over the machine's
    /// cores.
    fn check_all(&self, raws: Vec<Bytes>) -> Vec<(Bytes, Checked)> {
        let check = |raw: Bytes| {
            let checked = TxEnvelope::decode_2718_exact(raw.as_ref())
                .map_err(|_| RestoreFault::Undecodable)
                .and_then(|tx| {
                    let sender = self
                        .check_stateless_as(&tx, raw.len(), false)
                        .map_err(RestoreFault::Stateless)?;
                    Ok((tx, sender))
                });
            (raw, checked)
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads < 2 || raws.len() < 256 {
            return raws.into_iter().map(check).collect();
        }
        let per = raws.len().div_ceil(threads);
        let mut chunks: Vec<Vec<Bytes>> = Vec::new();
        let mut rest = raws.into_iter();
        loop {
            let chunk: Vec<Bytes> = rest.by_ref().take(per).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(chunk);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| scope.spawn(move || chunk.into_iter().map(check).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }
}

/// A submission between its journal write and its addition. On drop it leaves the in-flight
/// set and, while armed, forgets the written row.
struct Unwritten<'a> {
    pool: &'a Pool,
    hash: B256,
    armed: bool,
}

impl Drop for Unwritten<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.forget(vec![self.hash]);
        }
        if let Some(done) = self.pool.in_flight.lock().remove(&self.hash) {
            let _ = done.send(true);
        }
    }
}

/// What `tx` can cost its sender at most: all its gas at its fee cap, plus its value.
pub(super) fn worst_case_cost(tx: &TxEnvelope) -> U256 {
    U256::from(tx.gas_limit())
        .saturating_mul(U256::from(tx.max_fee_per_gas()))
        .saturating_add(tx.value())
}
