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
    /// Per sender: the worst-case cost (gas × fee cap + value) of all its pending
    /// transactions together, kept as they come and go so admission checks the balance
    /// without summing the sender's queue (which made a backlog quadratic).
    pub(super) cost: HashMap<Address, U256>,
}

impl Inner {
    /// Length of `sender`'s run of consecutive nonces from its on-chain one: its executable
    /// transactions.
    pub(super) fn ready_len(&self, sender: &Address) -> usize {
        let Some(queue) = self.by_sender.get(sender) else {
            return 0;
        };
        let nonce = self.state_nonce.get(sender).copied().unwrap_or_default();
        // The usual case, without a walk: no gap, every nonce from the on-chain one.
        if let (Some((&first, _)), Some((&last, _))) =
            (queue.first_key_value(), queue.last_key_value())
            && first == nonce
            && last - first + 1 == queue.len() as u64
        {
            return queue.len();
        }
        ready_run(queue, nonce).count()
    }

    /// Counts `tx` into its sender's total worst-case cost.
    pub(super) fn cost_in(&mut self, tx: &PoolTx) {
        let c = self.cost.entry(tx.sender()).or_default();
        *c = c.saturating_add(super::admission::worst_case_cost(&tx.stored.tx));
    }

    /// Takes `tx` out of its sender's total worst-case cost.
    pub(super) fn cost_out(&mut self, tx: &PoolTx) {
        let sender = tx.sender();
        if let Some(c) = self.cost.get_mut(&sender) {
            *c = c.saturating_sub(super::admission::worst_case_cost(&tx.stored.tx));
        }
        if !self.by_sender.contains_key(&sender) {
            self.cost.remove(&sender);
        }
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
        if let Some(queue) = self.by_sender.get_mut(&sender)
            && queue.remove(&tx.nonce()).is_some()
        {
            if queue.is_empty() {
                self.by_sender.remove(&sender);
            }
            self.cost_out(tx);
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
