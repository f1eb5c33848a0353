//! What PIPE knows about each transaction it tracks, and about those it finished.

use super::*;

/// Where a tracked transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for discovery, or for the sender's earlier nonce.
    Pending,
    Simulating,
    /// Its simulation stopped at this request.
    Awaiting(B256),
    Ready,
}

#[derive(Debug)]
pub(super) struct TxEntry {
    pub(super) sender: Address,
    pub(super) nonce: u64,
    pub(super) priority: Priority,
    pub(super) phase: Phase,
    /// Distinct requests discovered, in discovery order.
    pub(super) keys: Vec<B256>,
    /// Simulations it took part in (shown by the status RPC).
    pub(super) simulations: u32,
    /// Simulations that stopped at it at a request it had not made before: what
    /// `max_simulations` bounds.
    pub(super) rounds: u32,
    pub(super) stale: u32,
    /// Why it was last left out of a block, until it is ready again (stale) or included
    /// (carried over while ready).
    pub(super) deferred: Option<Deferral>,
    /// The head when it arrived: it expires if not included by `arrived_at + tx_ttl_blocks`.
    pub(super) arrived_at: u64,
    /// Cost units of the distinct requests discovered (the sender's cap counts them).
    pub(super) units: u64,
    /// The head when it first became ready (every result in): blocks it then waits are the
    /// builder's doing, not the inference network's.
    pub(super) ready_at: Option<u64>,
}

/// A model's run time after observing `sample`: weight 1/5 on the newest run, so it follows
/// a slower worker within a few runs without one outlier moving it far.
pub(super) fn moving_average(previous: f64, sample: f64) -> f64 {
    0.8 * previous + 0.2 * sample
}

/// Milliseconds until a request's result is in. Running for `running_ms`: the model's run
/// time less that, down to zero. Queued: the rounds of `slots` worker slots needed for the
/// `ahead` requests before it and itself, each taking `model_ms`.
pub(super) fn eta_ms(model_ms: f64, running_ms: Option<u64>, ahead: usize, slots: usize) -> u64 {
    if let Some(ran) = running_ms {
        return (model_ms.round() as u64).saturating_sub(ran);
    }
    let rounds = (ahead / slots.max(1)) as f64 + 1.0;
    (model_ms * rounds).round() as u64
}

/// One sender's live inference, checked against its caps as discovery finds requests.
#[derive(Debug, Default)]
pub(super) struct SenderLoad {
    /// Live transactions that requested inference.
    pub(super) txs: usize,
    /// Cost units they requested.
    pub(super) units: u64,
}

impl SenderLoad {
    pub(super) fn of(txs: &HashMap<B256, TxEntry>, nonces: Option<&BTreeMap<u64, B256>>) -> Self {
        let mut load = Self::default();
        for e in nonces
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|h| txs.get(h))
        {
            if !e.keys.is_empty() {
                load.txs += 1;
                load.units = load.units.saturating_add(e.units);
            }
        }
        load
    }

    /// Counts `call`, new for `e`, or says which cap it breaks.
    pub(super) fn admit(
        &mut self,
        e: &mut TxEntry,
        call: &InferenceCall,
        config: &PipeConfig,
    ) -> Result<(), String> {
        if e.keys.contains(&call.key) {
            return Ok(());
        }
        let first = e.keys.is_empty();
        if first && self.txs >= config.max_inference_txs_per_sender {
            return Err(format!(
                "sender has {} transactions with inference pending (limit {})",
                self.txs, config.max_inference_txs_per_sender
            ));
        }
        let units = self.units.saturating_add(call.units());
        if units > config.max_inference_units_per_sender {
            return Err(format!(
                "sender's pending inference would cost {units} cost units (limit {})",
                config.max_inference_units_per_sender
            ));
        }
        self.txs += usize::from(first);
        self.units = units;
        e.units = e.units.saturating_add(call.units());
        Ok(())
    }
}

/// Why a block left a transaction out. The status text is made from it when asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Deferral {
    /// It asked for request `key`, which the block had no result for.
    Stale { block: u64, key: B256 },
    /// It was ready, but the block was full or reached its deadline.
    CarriedOver { block: u64 },
}

impl Deferral {
    pub(super) fn reason(&self) -> String {
        match self {
            Deferral::Stale { block, key } => format!(
                "left out of block {block}: it asked for request {key}, which was not computed (its inputs changed since simulation)"
            ),
            Deferral::CarriedOver { block } => format!(
                "ready, but not in block {block} (the block was full or reached its deadline): carried over to the next block with its results"
            ),
        }
    }
}

impl TxEntry {
    /// Where the status RPC and the metrics say it is.
    pub(super) fn lifecycle(&self) -> Lifecycle {
        match self.phase {
            // A ready transaction a block left out stays `ready` (its reason says it was
            // carried over): it needs nothing more to be included.
            Phase::Ready => Lifecycle::Ready,
            _ if self.deferred.is_some() => Lifecycle::Deferred,
            Phase::Pending => Lifecycle::Pending,
            Phase::Simulating => Lifecycle::Simulating,
            Phase::Awaiting(_) => Lifecycle::AwaitingInference,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) txs: HashMap<B256, TxEntry>,
    pub(super) by_sender: HashMap<Address, BTreeMap<u64, B256>>,
    /// Senders whose pending run must be simulated (again).
    pub(super) dirty: BTreeSet<Address>,
    pub(super) requests: Requests,
    pub(super) workers: Workers,
    pub(super) finished: HashMap<B256, TxStatus>,
    pub(super) finished_order: VecDeque<B256>,
    /// Each model's observed run time, a moving average (ms, on the dispatcher's clock): how
    /// long a queued request should take, for the status's estimate.
    pub(super) model_ms: HashMap<ModelId, f64>,
}

impl State {
    /// Ends a transaction's tracking with a final status, keeping what is known of its
    /// simulations and (when included) the requests it used.
    pub(super) fn finish(&mut self, hash: B256, mut status: TxStatus, capacity: usize) {
        if let Some(e) = self.txs.remove(&hash) {
            status.simulations = e.simulations;
            status.stale = e.stale;
            status.ready_at = e.ready_at;
            if status.status == Lifecycle::Included {
                status.requests = e
                    .keys
                    .iter()
                    .map(|k| RequestStatus {
                        key: *k,
                        state: RequestState::Done,
                    })
                    .collect();
            }
            if let Some(m) = self.by_sender.get_mut(&e.sender) {
                if m.get(&e.nonce) == Some(&hash) {
                    m.remove(&e.nonce);
                }
                if m.is_empty() {
                    self.by_sender.remove(&e.sender);
                }
            }
            for key in &e.keys {
                self.requests.forget_waiter(key, &hash);
            }
        }
        if self.finished.insert(hash, status).is_none() {
            self.finished_order.push_back(hash);
        }
        while self.finished_order.len() > capacity {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }
}

pub(super) fn final_status(
    hash: B256,
    status: Lifecycle,
    block: Option<u64>,
    reason: Option<String>,
) -> TxStatus {
    TxStatus {
        block_number: block,
        reason,
        ..TxStatus::new(hash, status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipe_primitives::{ModelId, ModelMeta, inference::InferenceMode};

    fn call(key: u8, units: u64) -> InferenceCall {
        InferenceCall {
            key: B256::repeat_byte(key),
            request: Default::default(),
            mode: InferenceMode::Vanilla,
            model: ModelMeta {
                id: ModelId::of(b"m"),
                name: "m".into(),
                size_bytes: 1,
                inputs: Vec::new(),
                outputs: Vec::new(),
                decimals: 0,
                cost_units: units,
                operators: Vec::new(),
                kind: pipe_primitives::ModelKind::Onnx,
                llm: None,
            },
            task: pipe_executor::inference::Task::Model {
                request: Default::default(),
                inputs: Vec::new(),
            },
        }
    }

    fn entry() -> TxEntry {
        TxEntry {
            sender: Address::ZERO,
            nonce: 0,
            priority: Priority::default(),
            phase: Phase::Pending,
            keys: Vec::new(),
            simulations: 0,
            rounds: 0,
            stale: 0,
            deferred: None,
            arrived_at: 0,
            units: 0,
            ready_at: None,
        }
    }

    #[test]
    fn a_sender_is_capped_by_transactions_and_by_cost_units() {
        let config = PipeConfig {
            max_inference_txs_per_sender: 2,
            max_inference_units_per_sender: 2_500,
            ..PipeConfig::default()
        };
        let mut load = SenderLoad::default();
        let (mut a, mut b, mut c) = (entry(), entry(), entry());
        load.admit(&mut a, &call(1, 1_000), &config).unwrap();
        a.keys.push(B256::repeat_byte(1));
        // A request the transaction already made is not counted again.
        load.admit(&mut a, &call(1, 1_000), &config).unwrap();
        assert_eq!((load.txs, load.units, a.units), (1, 1_000, 1_000));
        // A second request of the same transaction counts units, not transactions.
        load.admit(&mut a, &call(2, 1_000), &config).unwrap();
        a.keys.push(B256::repeat_byte(2));
        assert_eq!((load.txs, load.units), (1, 2_000));
        // Over the units cap.
        let e = load.admit(&mut b, &call(3, 1_000), &config).unwrap_err();
        assert!(e.contains("3000 cost units (limit 2500)"), "{e}");
        load.admit(&mut b, &call(3, 400), &config).unwrap();
        b.keys.push(B256::repeat_byte(3));
        // Over the transactions cap, though units would fit.
        let e = load.admit(&mut c, &call(4, 1), &config).unwrap_err();
        assert!(
            e.contains("2 transactions with inference pending (limit 2)"),
            "{e}"
        );
        assert_eq!((load.txs, load.units, c.units), (2, 2_400, 0));
    }

    #[test]
    fn the_estimate_follows_observed_run_times_and_the_queue_ahead() {
        let mut ms = 100.0;
        for _ in 0..20 {
            ms = moving_average(ms, 300.0);
        }
        assert!((ms - 300.0).abs() < 5.0, "follows a slower model: {ms}");
        assert_eq!(
            moving_average(100.0, 600.0),
            200.0,
            "one outlier moves it a fifth"
        );
        // 4 slots: the first 3 queued requests run with it in the first round.
        assert_eq!(eta_ms(100.0, None, 0, 4), 100);
        assert_eq!(eta_ms(100.0, None, 3, 4), 100);
        assert_eq!(eta_ms(100.0, None, 4, 4), 200);
        assert_eq!(eta_ms(100.0, None, 9, 4), 300);
        assert_eq!(
            eta_ms(100.0, None, 9, 0),
            1_000,
            "all benched: one slot assumed"
        );
        // Running: it counts down, and stays at zero past the usual run time.
        assert_eq!(eta_ms(100.0, Some(0), 0, 4), 100);
        assert_eq!(eta_ms(100.0, Some(30), 0, 4), 70);
        assert_eq!(eta_ms(100.0, Some(150), 0, 4), 0);
    }

    #[test]
    fn the_load_counts_only_live_transactions_that_requested_inference() {
        let mut txs = HashMap::new();
        let mut nonces = BTreeMap::new();
        for (n, units) in [(0u64, 700u64), (1, 0), (2, 300)] {
            let hash = B256::with_last_byte(n as u8);
            let mut e = entry();
            e.units = units;
            if units > 0 {
                e.keys.push(hash);
            }
            txs.insert(hash, e);
            nonces.insert(n, hash);
        }
        // A nonce whose transaction already ended is skipped.
        nonces.insert(3, B256::repeat_byte(0xee));
        let load = SenderLoad::of(&txs, Some(&nonces));
        assert_eq!((load.txs, load.units), (2, 1_000));
    }
}
