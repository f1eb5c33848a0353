//! The pool proper, one file per piece of state: the handle and its lifecycle (here),
//! [`admission`] (the checks, the durable write, replacement and eviction), [`inner`] (the
//! indexes) and [`best`] (the builder's iterator).

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
    /// The dev chain: transactions from impersonated addresses ([`Pool::impersonate`]) are
    /// taken without a signature ([`pipe_primitives::edits::impersonated_sender`]).
    pub dev_impersonation: bool,
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
            dev_impersonation: false,
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
    /// Each flips to `true` when its submission is done, for a second submission of the same
    /// bytes waiting on it.
    in_flight: parking_lot::Mutex<HashMap<B256, tokio::sync::watch::Sender<bool>>>,
    /// Addresses whose transactions are taken unsigned (`anvil_impersonateAccount`), and
    /// whether every address is (`anvil_autoImpersonateAccount`). Not persisted, as on anvil;
    /// transactions admitted under it are, and come back after a restart.
    impersonating: RwLock<(HashSet<Address>, bool)>,
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

mod admission;
mod best;
mod inner;

pub use best::BestTransactions;
use best::Candidate;
use inner::{Inner, ready_run};

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
            impersonating: Default::default(),
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

    /// Takes `address`'s transactions without a signature from now on (`on`), or no longer.
    /// Refused unless the pool is the dev chain's ([`PoolConfig::dev_impersonation`]).
    pub fn impersonate(&self, address: Address, on: bool) -> bool {
        if !self.config.dev_impersonation {
            return false;
        }
        let mut imp = self.impersonating.write();
        if on {
            imp.0.insert(address);
        } else {
            imp.0.remove(&address);
        }
        true
    }

    /// Takes every address's transactions without a signature (`on`), or only the listed ones.
    pub fn impersonate_all(&self, on: bool) -> bool {
        if !self.config.dev_impersonation {
            return false;
        }
        self.impersonating.write().1 = on;
        true
    }

    /// Whether `address`'s transactions are taken without a signature.
    pub fn impersonates(&self, address: &Address) -> bool {
        let imp = self.impersonating.read();
        self.config.dev_impersonation && (imp.1 || imp.0.contains(address))
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

    /// Every pending transaction, split as geth's `txpool_content` splits them: executable
    /// (each sender's run of consecutive nonces from its on-chain one) and queued (behind a
    /// nonce gap). In sender order, then nonce order.
    pub fn content(&self) -> (Vec<Arc<PoolTx>>, Vec<Arc<PoolTx>>) {
        let inner = self.inner.read();
        let mut senders: Vec<&Address> = inner.by_sender.keys().collect();
        senders.sort();
        let (mut pending, mut queued) = (Vec::new(), Vec::new());
        for sender in senders {
            let queue = &inner.by_sender[sender];
            let state_nonce = inner.state_nonce.get(sender).copied().unwrap_or_default();
            let run: HashSet<B256> = ready_run(queue, state_nonce).map(|t| t.hash()).collect();
            for tx in queue.values() {
                if run.contains(&tx.hash()) {
                    pending.push(tx.clone());
                } else {
                    queued.push(tx.clone());
                }
            }
        }
        (pending, queued)
    }

    /// Resolves when a transaction arrives after the call (or one arrived since the last
    /// waiter was woken).
    pub async fn subscribe(&self) {
        self.arrivals.notified().await
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
        let included_hashes: HashSet<B256> = included.iter().map(|t| t.hash).collect();
        for (sender, next) in next_nonce {
            inner.state_nonce.insert(sender, next);
            let Some(queue) = inner.by_sender.get_mut(&sender) else {
                inner.recount(&sender);
                continue;
            };
            let keep = queue.split_off(&next);
            let gone = std::mem::replace(queue, keep);
            let empty = queue.is_empty();
            if empty {
                // The nonce entry stays: a transaction validated against an older state may
                // still arrive for this sender.
                inner.by_sender.remove(&sender);
            }
            for (_, tx) in gone {
                inner.cost_out(&tx);
                if !included_hashes.contains(&tx.hash()) {
                    superseded.push(tx.hash());
                }
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

    /// The dev chain set these senders' nonces (a state edit, up or down): each pending
    /// transaction below its sender's new nonce can never be included and leaves with the
    /// reason; the rest wait for their turn from the new nonce. Returns the hashes removed.
    pub fn on_nonce_edits(&self, nonces: &[(Address, u64)]) -> Vec<B256> {
        let mut inner = self.inner.write();
        let mut gone_all = Vec::new();
        for (sender, nonce) in nonces {
            inner.state_nonce.insert(*sender, *nonce);
            if let Some(queue) = inner.by_sender.get_mut(sender) {
                let keep = queue.split_off(nonce);
                let gone = std::mem::replace(queue, keep);
                if queue.is_empty() {
                    inner.by_sender.remove(sender);
                }
                for (_, tx) in gone {
                    inner.cost_out(&tx);
                    gone_all.push(tx.hash());
                }
            }
            inner.recount(sender);
        }
        for h in &gone_all {
            inner.by_hash.remove(h);
            self.emit(PoolEvent::Removed {
                hash: *h,
                reason: RemovalReason::Dropped {
                    reason: "its nonce is below the sender's, which a dev state edit set".into(),
                },
            });
        }
        self.forget(gone_all.clone());
        gone_all
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
            for t in later.values() {
                inner.cost_out(t);
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

    /// The sender's running worst-case cost, which admission checks against its balance,
    /// always equals the sum over its queue, through replacements, blocks and removals.
    #[test]
    fn the_senders_running_cost_follows_its_queue() {
        let key = PrivateKeySigner::random();
        let p = pool();
        let sum = |p: &Pool| -> (U256, U256) {
            let inner = p.inner.read();
            let running = inner.cost.get(&key.address()).copied().unwrap_or_default();
            let summed = inner.by_sender.get(&key.address()).map_or(U256::ZERO, |q| {
                q.values()
                    .map(|t| admission::worst_case_cost(&t.stored.tx))
                    .fold(U256::ZERO, |a, b| a + b)
            });
            (running, summed)
        };
        let mut txs = Vec::new();
        for n in 0..6 {
            let tx = signed(&key, n, 5, 100);
            add(&p, tx.clone(), rich()).unwrap();
            txs.push(tx);
        }
        let (r, s) = sum(&p);
        assert_eq!(r, s);
        assert!(r > U256::ZERO);
        // A replacement swaps its cost in.
        add(&p, signed(&key, 2, 20, 300), rich()).unwrap();
        let (r, s) = sum(&p);
        assert_eq!(r, s);
        // A block includes the first two; a removal takes nonce 4 and the one after it.
        let included: Vec<StoredTx> = txs[..2]
            .iter()
            .map(|t| StoredTx {
                hash: *t.tx_hash(),
                sender: key.address(),
                tx: t.clone(),
            })
            .collect();
        p.on_block(1, &included);
        let (r, s) = sum(&p);
        assert_eq!(r, s);
        p.remove(txs[4].tx_hash(), "test");
        let (r, s) = sum(&p);
        assert_eq!(r, s);
        // Everything gone: nothing left counted.
        let rest: Vec<StoredTx> = p
            .ready_run_of(&key.address())
            .iter()
            .map(|t| t.stored.clone())
            .collect();
        p.on_block(2, &rest);
        assert!(!p.inner.read().cost.contains_key(&key.address()));
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
