//! The pending-transaction pool.
//!
//! # Design
//! The pool is the one owner of pending transactions: it validates them, keeps them, persists
//! them, and says when each one leaves and why.
//!
//! A transaction enters through [`Pool::admit`], the one admission path for RPC and for a
//! restart alike: decode the EIP-2718 bytes, the stateless checks (size, type, chain id,
//! signature, gas against the block and the EIP-7825 cap, intrinsic gas, fee fields), the
//! sender's state read by the caller, then [`Pool::add`], which runs the stateful ones against
//! it ([`SenderState`]: nonce and balance). geth's error texts are used, because clients match
//! on them. RPC comes through [`Pool::submit`], which also makes the transaction durable
//! before it is added and acknowledged ([`journal`]: group commit behind the [`PoolStore`]
//! seam); a restart comes through [`Pool::restore`].
//!
//! # Events
//! Every change is a [`PoolEvent`], delivered to each [`PoolListener`] under the pool's lock,
//! in order: added (possibly replacing another), removed with a [`RemovalReason`] (included,
//! replaced, its nonce used by a block, dropped by a driver or PIPE with the reason, or
//! dependent on a dropped one). PIPE and RPC subscriptions follow the pool through these
//! events; nobody needs to scan it.
//!
//! Inside, each sender has a queue ordered by nonce. A transaction is *ready* when every nonce
//! from the sender's on-chain nonce up to its own is present; later ones wait (a nonce gap is
//! accepted, up to [`PoolConfig::max_nonce_gap`], as in geth's queue).
//!
//! The block builder asks for [`Pool::best_transactions`]: an iterator yielding ready
//! transactions by priority, **higher is better**: the effective tip at the block's base fee,
//! then arrival order. After yielding a sender's nonce `n`, that sender's `n + 1` becomes a
//! candidate. A builder that cannot include a transaction calls
//! [`BestTransactions::mark_invalid`], which also skips the sender's later nonces for this block.
//!
//! After a block, [`Pool::on_block`] removes included transactions, and any transaction of the
//! same senders whose nonce is now used, and wakes nothing: the pool's only thread is its
//! journal's writer. New
//! arrivals notify [`Pool::subscribe`] so an on-demand sealer can build at once.
//!
//! # Limits
//! [`PoolConfig`] bounds transactions per sender and in total, the encoded size, and the nonce
//! gap. A replacement (same sender and nonce) needs at least [`PoolConfig::price_bump`] percent
//! more in both fee cap and tip.

mod error;
pub mod events;
pub mod journal;
mod pool;

pub use error::{AdmitError, PoolError, PoolErrorKind};
pub use events::{PoolEvent, PoolListener, RemovalReason};
pub use journal::{MemoryPoolStore, PersistError, PoolStore, PoolWrite};
pub use pool::{BestTransactions, Pool, PoolConfig, PoolTx, Restored, SenderState};
