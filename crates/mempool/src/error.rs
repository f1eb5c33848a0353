use alloy_primitives::B256;
use thiserror::Error;

/// Why the pool refused a transaction. The `Display` texts are geth's, so clients that match
/// on them (ethers, viem, cast) react as they do against geth or anvil.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PoolErrorKind {
    #[error("already known")]
    AlreadyKnown,
    #[error("nonce too low: next nonce {state}, tx nonce {tx}")]
    NonceTooLow { tx: u64, state: u64 },
    #[error("nonce too high: next nonce {state}, tx nonce {tx} (gap limit {limit})")]
    NonceTooHigh { tx: u64, state: u64, limit: u64 },
    #[error("insufficient funds for gas * price + value: balance {balance}, tx cost {cost}")]
    InsufficientFunds { balance: String, cost: String },
    /// The sender's pending transactions together could cost more than its balance.
    #[error(
        "transaction would cause overdraft: balance {balance}, pending transactions' worst-case cost with this one {total}"
    )]
    Overdraft { balance: String, total: String },
    #[error("intrinsic gas too low: have {have}, want {want}")]
    IntrinsicGasTooLow { have: u64, want: u64 },
    #[error("exceeds block gas limit")]
    GasLimitExceedsBlock,
    #[error("transaction gas limit too high (cap: {cap}, tx: {tx})")]
    GasLimitExceedsCap { tx: u64, cap: u64 },
    #[error("replacement transaction underpriced")]
    ReplacementUnderpriced,
    /// A listener refused to let the transaction be replaced (PIPE: inference already
    /// requested for it; it ends included and paying, or by expiry).
    #[error("replacement transaction refused: {0}")]
    ReplacementRefused(String),
    #[error("oversized data: transaction size {size}, limit {limit}")]
    Oversized { size: usize, limit: usize },
    #[error("invalid chain id: have {have}, want {want}")]
    WrongChainId { have: u64, want: u64 },
    #[error("invalid sender: {0}")]
    InvalidSignature(String),
    #[error("transaction type not supported")]
    UnsupportedType,
    #[error(
        "max fee per gas less than block base fee: maxFeePerGas: {fee_cap}, baseFee: {base_fee}"
    )]
    FeeCapBelowBaseFee { fee_cap: u128, base_fee: u64 },
    #[error("max priority fee per gas higher than max fee per gas")]
    TipAboveFeeCap,
    #[error("txpool is full: sender has {0} pending transactions")]
    SenderFull(usize),
    #[error("txpool is full")]
    PoolFull,
    /// Too many future-nonce (gapped) transactions from this sender.
    #[error("txpool is full: sender has {queued} future-nonce transactions (limit {limit})")]
    SenderQueueFull { queued: usize, limit: usize },
}

/// A refused transaction: which one and why.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{kind}")]
pub struct PoolError {
    pub hash: B256,
    pub kind: PoolErrorKind,
}

/// Why [`crate::Pool::admit`] did not admit a transaction: its bytes, the pool's rules, or the
/// caller's reading of the sender's state (`E`).
#[derive(Debug, Error)]
pub enum AdmitError<E> {
    #[error("failed to decode signed transaction: {0}")]
    Undecodable(alloy_eips::eip2718::Eip2718Error),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("reading the sender's state: {0}")]
    State(E),
    /// Valid, but it could not be made durable, so it was not accepted.
    #[error("{0}")]
    Persist(crate::PersistError),
}
