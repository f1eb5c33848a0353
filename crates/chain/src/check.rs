//! A validator's check of the inference results a block commits to.
//!
//! Replay proves a block matches its sidecar; it cannot tell a fabricated VANILLA result from
//! the model's. So a validator, before it accepts a block from elsewhere, compares the
//! committed results with its own ([`LocalResults`]: its PIPE cache, or a run of the model
//! within a bound) by the tolerance rule of [`pipe_abi::tolerance`]. TEE results are not
//! compared: replay already checked each one's signature by a registered worker.
//!
//! [`CheckPolicy`] says which VANILLA results are compared: all, a deterministic sample (the
//! same on every node, chosen by block hash and request key, so a leader cannot know which
//! of its results will be looked at before it commits the block), or none.
//!
//! A result the validator cannot compute now (its model is missing, the run timed out) makes
//! the block *not yet* verifiable, never invalid: honest validators must agree on validity,
//! and a slow CPU is not evidence.

use std::sync::Arc;

use alloy_primitives::{B256, keccak256};
use pipe_executor::InferenceCall;
use pipe_primitives::{InferenceResult, inference::InferenceMode};

/// Which VANILLA results a validator compares with its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CheckPolicy {
    /// Every one.
    #[default]
    All,
    /// One in `n`, chosen by `keccak256(block hash ‖ key)`: the same sample on every node.
    OneIn(u32),
    /// None (replay only).
    Off,
}

impl CheckPolicy {
    /// Whether the result for `key` in block `block` is compared.
    pub fn samples(&self, block: &B256, key: &B256) -> bool {
        match *self {
            Self::All => true,
            Self::Off => false,
            Self::OneIn(n) if n <= 1 => true,
            Self::OneIn(n) => {
                let mut seed = [0u8; 64];
                seed[..32].copy_from_slice(block.as_slice());
                seed[32..].copy_from_slice(key.as_slice());
                let h = keccak256(seed);
                let x = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
                x % u64::from(n) == 0
            }
        }
    }
}

impl std::str::FromStr for CheckPolicy {
    type Err = String;

    /// `all`, `off`, or `1/N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Self::All),
            "off" => Ok(Self::Off),
            _ => s
                .strip_prefix("1/")
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| *n >= 1)
                .map(Self::OneIn)
                .ok_or_else(|| format!("`{s}`: expected all, off or 1/N")),
        }
    }
}

/// This node's own answer to a request.
#[derive(Clone, Debug)]
pub enum LocalResult {
    /// Computed (or cached): compare with it.
    Computed(InferenceResult),
    /// Cannot be had now; the reason. The block waits.
    Unavailable(String),
}

/// Where a validator gets its own results: PIPE's cache first, then a bounded run.
pub trait LocalResults: Send + Sync + 'static {
    fn result(&self, call: &InferenceCall) -> LocalResult;
}

/// A check of a block's results: the policy and the source of this node's own.
#[derive(Clone)]
pub struct ResultCheck {
    pub policy: CheckPolicy,
    pub local: Arc<dyn LocalResults>,
}

impl std::fmt::Debug for ResultCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultCheck")
            .field("policy", &self.policy)
            .finish()
    }
}

/// What the check found.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Every sampled result agrees (`checked` of them).
    Agree { checked: usize },
    /// The result for `key` does not agree with this node's, and why.
    Disagree { key: B256, reason: String },
    /// This node cannot compute the result for `key` now.
    Unavailable { key: B256, reason: String },
}

impl ResultCheck {
    /// Compares the results `sidecar_of` answers for `calls` in block `hash`.
    pub fn check(
        &self,
        hash: &B256,
        calls: &[InferenceCall],
        committed: impl Fn(&B256) -> Option<InferenceResult>,
    ) -> CheckOutcome {
        let mut checked = 0;
        for call in calls {
            if call.mode != InferenceMode::Vanilla || !self.policy.samples(hash, &call.key) {
                continue;
            }
            let Some(committed) = committed(&call.key) else {
                // Replay already refuses a block that uses a result it does not carry.
                continue;
            };
            match self.local.result(call) {
                LocalResult::Computed(mine) => {
                    if let Err(reason) = pipe_abi::tolerance::results_agree(&committed, &mine) {
                        return CheckOutcome::Disagree {
                            key: call.key,
                            reason,
                        };
                    }
                    checked += 1;
                }
                LocalResult::Unavailable(reason) => {
                    return CheckOutcome::Unavailable {
                        key: call.key,
                        reason,
                    };
                }
            }
        }
        CheckOutcome::Agree { checked }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_the_same_everywhere_and_near_its_rate() {
        let policy = CheckPolicy::OneIn(4);
        let block = B256::repeat_byte(9);
        let picked = (0u64..4000)
            .filter(|i| policy.samples(&block, &keccak256(i.to_be_bytes())))
            .count();
        assert!((800..1200).contains(&picked), "{picked} of 4000");
        let again = (0u64..4000)
            .filter(|i| policy.samples(&block, &keccak256(i.to_be_bytes())))
            .count();
        assert_eq!(picked, again);
        assert!(CheckPolicy::All.samples(&block, &block));
        assert!(!CheckPolicy::Off.samples(&block, &block));
    }

    #[test]
    fn policies_parse() {
        assert_eq!("all".parse(), Ok(CheckPolicy::All));
        assert_eq!("off".parse(), Ok(CheckPolicy::Off));
        assert_eq!("1/10".parse(), Ok(CheckPolicy::OneIn(10)));
        assert!("1/0".parse::<CheckPolicy>().is_err());
        assert!("half".parse::<CheckPolicy>().is_err());
    }
}
