//! The pool's indexes: by hash, by sender and nonce, each sender's known nonce, and how many
//! of its transactions wait behind a nonce gap.

use super::*;

#[derive(Default)]
pub(super) struct Inner {
    pub(super) by_hash: HashMap<B256, Arc<PoolTx>>,
    /// Per sender: nonce -> transaction.
    pub(super) by_sender: HashMap<Address, BTreeMap<u64, Arc<PoolTx>>>,
    /// Per sender: the on-chain nonce last seen (at validation or after a block).
    pub(super) state_nonce: HashMap<Address, u64>,
    /// Per sender: how many of its transactions wait behind a nonce gap.
    pub(super) queued: HashMap<Address, usize>,
    pub(super) queued_total: usize,
    pub(super) next_arrival: u64,
}

impl Inner {
    /// Length of `sender`'s run of consecutive nonces from its on-chain one: its executable
    /// transactions.
    pub(super) fn ready_len(&self, sender: &Address) -> usize {
        let Some(queue) = self.by_sender.get(sender) else {
            return 0;
        };
        let nonce = self.state_nonce.get(sender).copied().unwrap_or_default();
        ready_run(queue, nonce).count()
    }

    /// Recounts `sender`'s future-nonce transactions after a change to its queue or nonce.
    pub(super) fn recount(&mut self, sender: &Address) {
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
    pub(super) fn take(&mut self, tx: &PoolTx) {
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

/// A sender's ready transactions: the consecutive run of nonces from its on-chain nonce.
pub(super) fn ready_run(
    queue: &BTreeMap<u64, Arc<PoolTx>>,
    state_nonce: u64,
) -> impl Iterator<Item = &Arc<PoolTx>> {
    (state_nonce..)
        .zip(queue.range(state_nonce..))
        .take_while(|(want, (n, _))| want == *n)
        .map(|(_, (_, tx))| tx)
}
