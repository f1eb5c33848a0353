//! The pool proper: storage of pending transactions and the best-transactions iterator.

use std::{
    collections::{BTreeMap, BinaryHeap, HashMap, HashSet},
    sync::Arc,
};

use alloy_consensus::{Transaction, TxEnvelope, transaction::SignerRecoverable};
use alloy_eips::{Decodable2718, Encodable2718};
use alloy_primitives::{Address, B256, Bytes, U256};
use parking_lot::RwLock;
use pipe_primitives::{BlockTx, StoredTx};
use tokio::sync::Notify;

use crate::{
    AdmitError, PoolError, PoolErrorKind,
    events::{PoolEvent, PoolListener, RemovalReason},
    journal::{Journal, PersistError, PoolStore},
};

/// Pool limits. Defaults are generous enough for load tests from a few senders and small
/// enough that a flood cannot exhaust memory.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub chain_id: u64,
    /// Block gas limit: no transaction may ask for more.
    pub block_gas_limit: u64,
    /// Pending transactions one sender may hold.
    pub max_per_sender: usize,
    /// Pending transactions in all.
    pub max_total: usize,
    /// Largest accepted encoded transaction (geth's limit: 128 KiB).
    pub max_tx_size: usize,
    /// How far past the on-chain nonce a transaction may be.
    pub max_nonce_gap: u64,
    /// Future-nonce transactions (behind a nonce gap, so not executable) one sender may hold.
    pub max_queued_per_sender: usize,
    /// Future-nonce transactions in all. Bounded apart from executable ones, and evicted
    /// first, because nobody pays for them until the gap is filled.
    pub max_queued_total: usize,
    /// Percent by which a replacement must raise fee cap and tip.
    pub price_bump: u128,
}

impl PoolConfig {
    pub fn new(chain_id: u64, block_gas_limit: u64) -> Self {
        Self {
            chain_id,
            block_gas_limit,
            max_per_sender: 4096,
            max_total: 50_000,
            max_tx_size: 128 * 1024,
            max_nonce_gap: 4096,
            max_queued_per_sender: 64,
            max_queued_total: 1024,
            price_bump: 10,
        }
    }
}

/// What the caller knows of the sender at the head: what validation is checked against.
#[derive(Clone, Copy, Debug, Default)]
pub struct SenderState {
    pub nonce: u64,
    pub balance: U256,
}

/// A validated pending transaction.
#[derive(Clone, Debug)]
pub struct PoolTx {
    pub stored: StoredTx,
    /// The EIP-2718 bytes, kept for persistence and re-broadcast.
    pub encoded: Bytes,
    /// Arrival order; ties in priority go to the earlier one.
    pub arrival: u64,
}

impl PoolTx {
    pub fn hash(&self) -> B256 {
        self.stored.hash
    }
    pub fn sender(&self) -> Address {
        self.stored.sender
    }
    pub fn nonce(&self) -> u64 {
        self.stored.tx.nonce()
    }
    /// Tip per gas this transaction pays at `base_fee`: what a block producer earns.
    pub fn effective_tip(&self, base_fee: u64) -> u128 {
        self.stored
            .tx
            .effective_tip_per_gas(base_fee)
            .unwrap_or_default()
    }
}

impl BlockTx for PoolTx {
    fn stored(&self) -> &StoredTx {
        &self.stored
    }

    fn encoded_2718(&self) -> Option<&[u8]> {
        Some(&self.encoded)
    }
}

#[derive(Default)]
struct Inner {
    by_hash: HashMap<B256, Arc<PoolTx>>,
    /// Per sender: nonce -> transaction.
    by_sender: HashMap<Address, BTreeMap<u64, Arc<PoolTx>>>,
    /// Per sender: the on-chain nonce last seen (at validation or after a block).
    state_nonce: HashMap<Address, u64>,
    /// Per sender: how many of its transactions wait behind a nonce gap.
    queued: HashMap<Address, usize>,
    queued_total: usize,
    next_arrival: u64,
}

impl Inner {
    /// Length of `sender`'s run of consecutive nonces from its on-chain one: its executable
    /// transactions.
    fn ready_len(&self, sender: &Address) -> usize {
        let Some(queue) = self.by_sender.get(sender) else {
            return 0;
        };
        let nonce = self.state_nonce.get(sender).copied().unwrap_or_default();
        ready_run(queue, nonce).count()
    }

    /// Recounts `sender`'s future-nonce transactions after a change to its queue or nonce.
    fn recount(&mut self, sender: &Address) {
        let len = self.by_sender.get(sender).map_or(0, |q| q.len());
        let queued = len - self.ready_len(sender);
        let old = if queued == 0 {
            self.queued.remove(sender).unwrap_or(0)
        } else {
            self.queued.insert(*sender, queued).unwrap_or(0)
        };
        self.queued_total = self.queued_total + queued - old;
    }

    /// Takes one transaction out (no dependents are touched) and recounts its sender.
    fn take(&mut self, tx: &PoolTx) {
        self.by_hash.remove(&tx.hash());
        let sender = tx.sender();
        if let Some(queue) = self.by_sender.get_mut(&sender) {
            queue.remove(&tx.nonce());
            if queue.is_empty() {
                self.by_sender.remove(&sender);
            }
        }
        self.recount(&sender);
    }
}

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

/// The pending-transaction pool. Share it behind an `Arc`.
pub struct Pool {
    config: PoolConfig,
    inner: RwLock<Inner>,
    arrivals: Notify,
    /// Hear every event, under the pool's lock (PIPE, subscriptions).
    listeners: RwLock<Vec<Arc<dyn PoolListener>>>,
    /// Persistence; `None` for a pool in memory only (tests, scratch chains).
    journal: Option<Journal>,
    /// Hashes being written by [`Pool::submit`]: a second submission of the same bytes while
    /// the first is in flight is already known, not written twice.
    in_flight: parking_lot::Mutex<HashSet<B256>>,
}

/// What [`Pool::restore`] did with the persisted transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub restored: usize,
    /// No longer valid (nonce used, funds gone, undecodable): forgotten.
    pub dropped: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("len", &self.len()).finish()
    }
}

impl Pool {
    /// A pool in memory only: nothing survives a restart.
    pub fn new(config: PoolConfig) -> Self {
        Self {
            config,
            inner: RwLock::default(),
            arrivals: Notify::new(),
            listeners: RwLock::default(),
            journal: None,
            in_flight: Default::default(),
        }
    }

    /// A pool that persists what it accepts in `store` before acknowledging it
    /// ([`Pool::submit`]) and forgets what leaves; [`Pool::restore`] reads it back. Starts the
    /// journal's writer thread; [`Pool::close`] stops it.
    pub fn with_store(config: PoolConfig, store: Arc<dyn PoolStore>) -> std::io::Result<Self> {
        Ok(Self {
            journal: Some(Journal::start(store)?),
            ..Self::new(config)
        })
    }

    /// Writes what the journal has queued and stops it; later submissions fail.
    pub fn close(&self) {
        if let Some(j) = &self.journal {
            j.close();
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// From now on `listener` hears every [`PoolEvent`], in the pool's order.
    pub fn add_listener(&self, listener: Arc<dyn PoolListener>) {
        // Under the pool's lock, so no event falls between two listeners' views.
        let _inner = self.inner.write();
        self.listeners.write().push(listener);
    }

    /// Tells every listener; called with the pool's write lock held.
    fn emit(&self, event: PoolEvent) {
        for l in self.listeners.read().iter() {
            l.on_event(&event);
        }
    }

    /// Forgets `hashes` in the journal (no fsync of its own, nobody waits).
    fn forget(&self, hashes: Vec<B256>) {
        if let Some(j) = &self.journal {
            j.delete(hashes);
        }
    }

    /// A sender's ready transactions: the consecutive run from its on-chain nonce.
    pub fn ready_run_of(&self, sender: &Address) -> Vec<Arc<PoolTx>> {
        let inner = self.inner.read();
        let state_nonce = inner.state_nonce.get(sender).copied().unwrap_or_default();
        inner
            .by_sender
            .get(sender)
            .map(|q| ready_run(q, state_nonce).cloned().collect())
            .unwrap_or_default()
    }

    /// Checks that need no state: decodes nothing, only looks at the envelope. Returns the
    /// recovered sender.
    pub fn check_stateless(
        &self,
        tx: &TxEnvelope,
        encoded_len: usize,
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
        let sender = tx
            .recover_signer()
            .map_err(|e| err(PoolErrorKind::InvalidSignature(e.to_string())))?;
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
        }
        // Admission pays the worst case: every pending transaction of the sender using all
        // its gas at its fee cap (inference gas included) must fit the balance together, so
        // what the builder will meet is funded and a sender cannot queue work it cannot pay.
        let others = inner.by_sender.get(&sender).map_or(U256::ZERO, |q| {
            q.iter()
                .filter(|(n, _)| **n != nonce)
                .fold(U256::ZERO, |sum, (_, t)| {
                    sum.saturating_add(worst_case_cost(&t.stored.tx))
                })
        });
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
                let picked: Vec<&Arc<PoolTx>> = if queued {
                    q.values().skip(ready).collect()
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

    /// Resolves when a transaction arrives after the call (or one arrived since the last
    /// waiter was woken).
    pub async fn subscribe(&self) {
        self.arrivals.notified().await
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
        if !self.in_flight.lock().insert(hash) {
            return Err(PoolError {
                hash,
                kind: PoolErrorKind::AlreadyKnown,
            }
            .into());
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
        // Lowest nonce first per sender, so no transaction waits behind a gap that is
        // only a matter of order.
        let mut txs: Vec<(Bytes, Option<(Address, u64)>)> = journal
            .store()
            .load()?
            .into_iter()
            .map(|raw| {
                let key = TxEnvelope::decode_2718_exact(raw.as_ref())
                    .ok()
                    .and_then(|tx| Some((tx.recover_signer().ok()?, tx.nonce())));
                (raw, key)
            })
            .collect();
        txs.sort_by_key(|(_, key)| *key);
        let mut report = Restored::default();
        let mut stale = Vec::new();
        for (raw, _) in txs {
            match self.admit(raw.as_ref(), base_fee, &state_of) {
                Ok(_) => report.restored += 1,
                Err(AdmitError::Pool(e)) if e.kind == PoolErrorKind::AlreadyKnown => {}
                // Not a fact about the transaction: stop rather than forget it.
                Err(AdmitError::State(e)) => {
                    return Err(PersistError(format!("reading a sender's state: {e}")));
                }
                Err(e) => {
                    tracing::debug!(target: "pipe::pool", error = %e, "persisted transaction dropped");
                    report.dropped += 1;
                    stale.push(alloy_primitives::keccak256(raw.as_ref()));
                }
            }
        }
        self.forget(stale);
        Ok(report)
    }

    pub fn get(&self, hash: &B256) -> Option<Arc<PoolTx>> {
        self.inner.read().by_hash.get(hash).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner.read().by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The nonce a sender's next transaction should use: the on-chain nonce plus the
    /// consecutive run of pending ones (`eth_getTransactionCount(addr, "pending")`).
    pub fn pending_nonce(&self, sender: &Address, state_nonce: u64) -> u64 {
        let inner = self.inner.read();
        let ready = inner
            .by_sender
            .get(sender)
            .map_or(0, |q| ready_run(q, state_nonce).count());
        state_nonce + ready as u64
    }

    /// Whether any transaction is ready (its sender's next nonce is present), without
    /// building a [`BestTransactions`] snapshot.
    pub fn has_ready(&self) -> bool {
        let inner = self.inner.read();
        inner.by_sender.iter().any(|(sender, queue)| {
            let nonce = inner.state_nonce.get(sender).copied().unwrap_or_default();
            queue.contains_key(&nonce)
        })
    }

    /// Ready transactions, best first, for a block with `base_fee`.
    pub fn best_transactions(&self, base_fee: u64) -> BestTransactions {
        let inner = self.inner.read();
        let mut queues = HashMap::with_capacity(inner.by_sender.len());
        let mut heap = BinaryHeap::new();
        for (sender, queue) in &inner.by_sender {
            let state_nonce = inner.state_nonce.get(sender).copied().unwrap_or_default();
            // A fee cap below this block's base fee waits (geth's base-fee sub-pool): it and
            // the sender's later nonces sit this block out and stay pending.
            let mut run: Vec<_> = ready_run(queue, state_nonce)
                .take_while(|t| t.stored.tx.max_fee_per_gas() >= base_fee as u128)
                .cloned()
                .collect();
            if run.is_empty() {
                continue;
            }
            run.reverse(); // pop() from the back yields increasing nonces
            let first = run.pop().expect("non-empty");
            heap.push(Candidate::new(first, base_fee));
            queues.insert(*sender, run);
        }
        BestTransactions {
            base_fee,
            heap,
            queues,
            invalid: HashSet::new(),
        }
    }

    /// Removes `included` transactions, and every pending transaction of their senders whose
    /// nonce the block used up. Returns the hashes removed besides the included ones.
    pub fn on_block(&self, number: u64, included: &[StoredTx]) -> Vec<B256> {
        let mut inner = self.inner.write();
        let mut next_nonce: HashMap<Address, u64> = HashMap::new();
        for tx in included {
            inner.by_hash.remove(&tx.hash);
            let n = next_nonce.entry(tx.sender).or_default();
            *n = (*n).max(tx.tx.nonce() + 1);
        }
        let mut superseded = Vec::new();
        for (sender, next) in next_nonce {
            inner.state_nonce.insert(sender, next);
            let Some(queue) = inner.by_sender.get_mut(&sender) else {
                inner.recount(&sender);
                continue;
            };
            let keep = queue.split_off(&next);
            let gone = std::mem::replace(queue, keep);
            let empty = queue.is_empty();
            for (_, tx) in gone {
                if !included.iter().any(|t| t.hash == tx.hash()) {
                    superseded.push(tx.hash());
                }
            }
            if empty {
                // The nonce entry stays: a transaction validated against an older state may
                // still arrive for this sender.
                inner.by_sender.remove(&sender);
            }
            // Its next nonce moved: future-nonce transactions may have become executable.
            inner.recount(&sender);
        }
        for h in &superseded {
            inner.by_hash.remove(h);
        }
        for tx in included {
            self.emit(PoolEvent::Removed {
                hash: tx.hash,
                reason: RemovalReason::Included { block: number },
            });
        }
        for h in &superseded {
            self.emit(PoolEvent::Removed {
                hash: *h,
                reason: RemovalReason::NonceUsed,
            });
        }
        self.forget(
            included
                .iter()
                .map(|t| t.hash)
                .chain(superseded.iter().copied())
                .collect(),
        );
        superseded
    }

    /// Drops a transaction that will never be included (invalid, rejected, expired: `reason`
    /// says which), and the sender's later ones, which depend on it. Returns every hash
    /// removed, `hash` first.
    pub fn remove(&self, hash: &B256, reason: &str) -> Vec<B256> {
        let mut inner = self.inner.write();
        let Some(tx) = inner.by_hash.get(hash).cloned() else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        if let Some(queue) = inner.by_sender.get_mut(&tx.sender()) {
            let later = queue.split_off(&tx.nonce());
            removed.extend(later.values().map(|t| t.hash()));
            if queue.is_empty() {
                inner.by_sender.remove(&tx.sender());
            }
        }
        inner.recount(&tx.sender());
        for h in &removed {
            inner.by_hash.remove(h);
            let reason = if h == hash {
                RemovalReason::Dropped {
                    reason: reason.to_string(),
                }
            } else {
                RemovalReason::DependsOn { hash: *hash }
            };
            self.emit(PoolEvent::Removed { hash: *h, reason });
        }
        self.forget(removed.clone());
        removed
    }
}

/// A sender's ready transactions: the consecutive run of nonces from its on-chain nonce.
fn ready_run(
    queue: &BTreeMap<u64, Arc<PoolTx>>,
    state_nonce: u64,
) -> impl Iterator<Item = &Arc<PoolTx>> {
    (state_nonce..)
        .zip(queue.range(state_nonce..))
        .take_while(|(want, (n, _))| want == *n)
        .map(|(_, (_, tx))| tx)
}

/// One sender's best candidate in the heap. Ordered so the heap's max is the best.
struct Candidate {
    tip: u128,
    tx: Arc<PoolTx>,
}

impl Candidate {
    fn new(tx: Arc<PoolTx>, base_fee: u64) -> Self {
        Self {
            tip: tx.effective_tip(base_fee),
            tx,
        }
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Higher tip first; on equal tips the earlier arrival wins.
        self.tip
            .cmp(&other.tip)
            .then_with(|| other.tx.arrival.cmp(&self.tx.arrival))
    }
}

/// Ready transactions in priority order, respecting each sender's nonce order. A snapshot:
/// transactions arriving later are not seen.
pub struct BestTransactions {
    base_fee: u64,
    heap: BinaryHeap<Candidate>,
    /// Per sender, the rest of its ready run (next nonce at the back).
    queues: HashMap<Address, Vec<Arc<PoolTx>>>,
    invalid: HashSet<Address>,
}

impl BestTransactions {
    /// The last yielded transaction could not be included: skip the rest of its sender's
    /// transactions in this iteration (their nonces would be wrong).
    pub fn mark_invalid(&mut self, tx: &PoolTx) {
        self.invalid.insert(tx.sender());
        self.queues.remove(&tx.sender());
    }
}

impl Iterator for BestTransactions {
    type Item = Arc<PoolTx>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let best = self.heap.pop()?.tx;
            if self.invalid.contains(&best.sender()) {
                continue;
            }
            if let Some(next) = self.queues.get_mut(&best.sender()).and_then(|q| q.pop()) {
                self.heap.push(Candidate::new(next, self.base_fee));
            }
            return Some(best);
        }
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
        self.pool.in_flight.lock().remove(&self.hash);
    }
}

/// What `tx` can cost its sender at most: all its gas at its fee cap, plus its value.
fn worst_case_cost(tx: &TxEnvelope) -> U256 {
    U256::from(tx.gas_limit())
        .saturating_mul(U256::from(tx.max_fee_per_gas()))
        .saturating_add(tx.value())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::{SignableTransaction, TxEip1559};
    use alloy_network::TxSignerSync;
    use alloy_primitives::TxKind;
    use alloy_signer_local::PrivateKeySigner;

    const CHAIN: u64 = 31337;

    fn signed(key: &PrivateKeySigner, nonce: u64, tip: u128, fee_cap: u128) -> TxEnvelope {
        let mut tx = TxEip1559 {
            chain_id: CHAIN,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: fee_cap,
            max_priority_fee_per_gas: tip,
            to: TxKind::Call(Address::repeat_byte(7)),
            value: U256::from(1),
            ..Default::default()
        };
        let sig = key.sign_transaction_sync(&mut tx).unwrap();
        tx.into_signed(sig).into()
    }

    fn rich() -> SenderState {
        SenderState {
            nonce: 0,
            balance: U256::from(10u128.pow(20)),
        }
    }

    fn pool() -> Pool {
        Pool::new(PoolConfig::new(CHAIN, 30_000_000))
    }

    fn add(pool: &Pool, tx: TxEnvelope, state: SenderState) -> Result<Option<B256>, PoolError> {
        let sender = pool.check_stateless(&tx, tx.encode_2718_len())?;
        pool.add(tx, sender, state, 1)
    }

    #[test]
    fn admit_decodes_checks_reads_the_sender_and_adds() {
        let key = PrivateKeySigner::random();
        let p = pool();
        let tx = signed(&key, 0, 5, 100);
        let raw = tx.encoded_2718();
        let mut asked = None;
        let hash = p
            .admit(&raw, 1, |sender| {
                asked = Some(*sender);
                Ok::<_, String>(rich())
            })
            .unwrap();
        assert_eq!(hash, *tx.tx_hash());
        assert_eq!(asked, Some(key.address()));
        assert!(p.get(&hash).is_some());
        // The same bytes again: the pool's own rule, with geth's text.
        let again = p.admit(&raw, 1, |_| Ok::<_, String>(rich())).unwrap_err();
        assert!(matches!(&again, AdmitError::Pool(e) if e.kind == PoolErrorKind::AlreadyKnown));
        // Junk never reaches the state read; a failed read is the caller's error, not the pool's.
        let junk = p
            .admit(&[0x02, 0xc0], 1, |_| -> Result<SenderState, String> {
                panic!("no state read for junk")
            })
            .unwrap_err();
        assert!(matches!(junk, AdmitError::Undecodable(_)));
        let other = signed(&PrivateKeySigner::random(), 0, 5, 100).encoded_2718();
        let failed = p
            .admit(&other, 1, |_| Err("disk gone".to_string()))
            .unwrap_err();
        assert!(matches!(failed, AdmitError::State(e) if e == "disk gone"));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn best_orders_by_tip_then_nonce_within_sender() {
        let (a, b) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let p = pool();
        add(&p, signed(&a, 1, 50, 100), rich()).unwrap(); // high tip but waits for nonce 0
        add(&p, signed(&a, 0, 1, 100), rich()).unwrap();
        add(&p, signed(&b, 0, 10, 100), rich()).unwrap();
        let order: Vec<_> = p
            .best_transactions(1)
            .map(|t| (t.sender(), t.nonce()))
            .collect();
        assert_eq!(
            order,
            vec![(b.address(), 0), (a.address(), 0), (a.address(), 1)]
        );
    }

    #[test]
    fn gap_is_not_ready_and_mark_invalid_skips_sender() {
        let (a, b) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let p = pool();
        add(&p, signed(&a, 0, 5, 100), rich()).unwrap();
        add(&p, signed(&a, 1, 5, 100), rich()).unwrap();
        add(&p, signed(&b, 2, 9, 100), rich()).unwrap(); // gap: nonce 0 and 1 missing
        assert!(p.has_ready());
        let only_gap = pool();
        add(&only_gap, signed(&b, 2, 9, 100), rich()).unwrap();
        assert!(!only_gap.has_ready(), "a nonce gap is not ready");
        let mut best = p.best_transactions(1);
        let first = best.next().unwrap();
        assert_eq!((first.sender(), first.nonce()), (a.address(), 0));
        best.mark_invalid(&first);
        assert!(best.next().is_none());
        assert_eq!(p.pending_nonce(&a.address(), 0), 2);
        assert_eq!(p.pending_nonce(&b.address(), 0), 0);
    }

    #[test]
    fn replacement_needs_price_bump() {
        let a = PrivateKeySigner::random();
        let p = pool();
        let first = signed(&a, 0, 10, 100);
        add(&p, first.clone(), rich()).unwrap();
        assert_eq!(
            add(&p, first.clone(), rich()).unwrap_err().kind,
            PoolErrorKind::AlreadyKnown
        );
        assert_eq!(
            add(&p, signed(&a, 0, 10, 109), rich()).unwrap_err().kind,
            PoolErrorKind::ReplacementUnderpriced
        );
        let replaced = add(&p, signed(&a, 0, 11, 110), rich()).unwrap();
        assert_eq!(replaced, Some(*first.tx_hash()));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn stateful_rejections_carry_geth_messages() {
        let a = PrivateKeySigner::random();
        let p = pool();
        let state = SenderState {
            nonce: 3,
            balance: U256::from(21_000u64 * 100),
        };
        let e = add(&p, signed(&a, 2, 1, 100), state).unwrap_err();
        assert!(e.to_string().starts_with("nonce too low"), "{e}");
        // 21000 * 100 + value 1 > balance
        let e = add(&p, signed(&a, 3, 1, 100), state).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("insufficient funds for gas * price + value"),
            "{e}"
        );
        let e = add(&p, signed(&a, 3, 0, 0), state).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("max fee per gas less than block base fee"),
            "{e}"
        );
    }

    #[test]
    fn stateless_rejections() {
        let a = PrivateKeySigner::random();
        let p = pool();
        let mut tx = TxEip1559 {
            chain_id: 1,
            gas_limit: 21_000,
            max_fee_per_gas: 10,
            to: TxKind::Call(Address::ZERO),
            ..Default::default()
        };
        let sig = a.sign_transaction_sync(&mut tx).unwrap();
        let env: TxEnvelope = tx.into_signed(sig).into();
        assert!(matches!(
            p.check_stateless(&env, 100).unwrap_err().kind,
            PoolErrorKind::WrongChainId { have: 1, .. }
        ));
        let mut tx = TxEip1559 {
            chain_id: CHAIN,
            gas_limit: 20_000,
            max_fee_per_gas: 10,
            to: TxKind::Call(Address::ZERO),
            ..Default::default()
        };
        let sig = a.sign_transaction_sync(&mut tx).unwrap();
        let env: TxEnvelope = tx.into_signed(sig).into();
        assert!(matches!(
            p.check_stateless(&env, 100).unwrap_err().kind,
            PoolErrorKind::IntrinsicGasTooLow {
                have: 20_000,
                want: 21_000
            }
        ));
        assert!(matches!(
            p.check_stateless(&env, 200_000).unwrap_err().kind,
            PoolErrorKind::Oversized { .. }
        ));
    }

    #[test]
    fn on_block_removes_included_and_superseded() {
        let a = PrivateKeySigner::random();
        let p = pool();
        let t0 = signed(&a, 0, 1, 100);
        add(&p, t0.clone(), rich()).unwrap();
        add(&p, signed(&a, 1, 1, 100), rich()).unwrap();
        let included = StoredTx {
            hash: *t0.tx_hash(),
            sender: a.address(),
            tx: t0,
        };
        assert!(p.on_block(1, &[included]).is_empty());
        assert_eq!(p.len(), 1);
        let best: Vec<_> = p.best_transactions(1).map(|t| t.nonce()).collect();
        assert_eq!(best, vec![1]);
    }
}
