//! The builder's view of the pool: ready transactions, best first.

use super::*;

/// One sender's best candidate in the heap. Ordered so the heap's max is the best.
pub(super) struct Candidate {
    pub(super) tip: u128,
    pub(super) tx: Arc<PoolTx>,
}

impl Candidate {
    pub(super) fn new(tx: Arc<PoolTx>, base_fee: u64) -> Self {
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
    pub(super) base_fee: u64,
    pub(super) heap: BinaryHeap<Candidate>,
    /// Per sender, the rest of its ready run (next nonce at the back).
    pub(super) queues: HashMap<Address, Vec<Arc<PoolTx>>>,
    pub(super) invalid: HashSet<Address>,
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
