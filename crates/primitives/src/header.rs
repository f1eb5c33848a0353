//! PIPE's fields in a block header, and the rule that moves the inference gas price.
//!
//! # Layout
//! A pipe header's `extra_data` is
//!
//! ```text
//! inference gas price (u64, big-endian) ‖ inference units used (u64, big-endian) ‖ [results root (32 bytes)]
//! price ‖ units ‖ results root or 32 zero bytes ‖ state edits hash (32 bytes)
//! ```
//!
//! 16 bytes for a block that used no inference results, 48 for one that did (the results root
//! is the sidecar's, [`crate::sidecar`]), 80 for a dev chain block that carries state edits
//! ([`crate::edits`]; a results root is never zero, so zeros there mean "no results"). The header hash therefore commits to the price every
//! transaction of the block paid, to the load that sets the next block's price, and to every
//! result. The fields are in `extra_data`, not new header fields, so every Ethereum tool
//! decodes and hashes pipe headers unchanged; this chain's `extra_data` is longer than the
//! 32 bytes Ethereum mainnet allows, which no tool checks but geth's consensus.
//!
//! # The price
//! The precompile charges `cost_units × inference gas price` (plus a fixed base and calldata
//! words: `pipe_executor::inference`). The price is a chain rule, EIP-1559 style
//! ([`InferencePricing::next_price`]): a block that used more cost units than the target raises
//! the next block's price, one that used fewer lowers it, by at most `1 / max_change_denominator`
//! per block, never below `min_price`. Usage above twice the target counts as twice the
//! target, so one block can move the price by at most that fraction, as in EIP-1559.
//! Units counted are those of results the block's transactions were charged for: a model run
//! the block did not use is not load this chain paid for.

use alloy_primitives::{B256, Bytes};
use serde::{Deserialize, Serialize};

/// The chain's inference price rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InferencePricing {
    /// Price of the first block (and of any block whose parent has no pipe fields: genesis).
    pub initial_price: u64,
    /// The price never falls below this (≥ 1, so an idle chain does not make inference free).
    pub min_price: u64,
    /// Cost units per block the price steers toward: what the inference network should be
    /// able to compute in one block interval.
    pub target_units: u64,
    /// The price moves by at most `1 / max_change_denominator` per block (8: EIP-1559's 12.5%).
    pub max_change_denominator: u64,
}

/// Default gas per cost unit of the first block.
pub const DEFAULT_INFERENCE_GAS_PRICE: u64 = 10;
/// Default target: fifty requests of a 1000-unit model per block.
pub const DEFAULT_INFERENCE_TARGET_UNITS: u64 = 50_000;

impl Default for InferencePricing {
    fn default() -> Self {
        Self {
            initial_price: DEFAULT_INFERENCE_GAS_PRICE,
            min_price: 1,
            target_units: DEFAULT_INFERENCE_TARGET_UNITS,
            max_change_denominator: 8,
        }
    }
}

impl InferencePricing {
    /// The inference gas price of the block after one with `parent` fields (`None`: a parent
    /// without pipe fields, such as genesis).
    pub fn next_price(&self, parent: Option<&InferenceFields>) -> u64 {
        let floor = self.min_price.max(1);
        let Some(p) = parent else {
            return self.initial_price.max(floor);
        };
        let target = u128::from(self.target_units.max(1));
        let denominator = u128::from(self.max_change_denominator.max(1));
        let price = u128::from(p.gas_price.max(floor));
        let used = u128::from(p.units);
        let next = if used > target {
            // Bounded: usage beyond twice the target moves the price no further.
            let excess = (used - target).min(target);
            // At least 1, so a small price still climbs under sustained load.
            price + (price * excess / target / denominator).max(1)
        } else if used < target {
            // At least 1 as well, so an idle chain's price reaches the floor.
            price.saturating_sub((price * (target - used) / target / denominator).max(1))
        } else {
            price
        };
        u64::try_from(next).unwrap_or(u64::MAX).max(floor)
    }
}

/// The pipe fields of one header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InferenceFields {
    /// Gas per model cost unit that this block's inference calls paid.
    pub gas_price: u64,
    /// Cost units of the results this block's transactions were charged for.
    pub units: u64,
    /// Root of the block's sidecar, when it used any result.
    pub results_root: Option<B256>,
    /// Hash of the block's state edits, when it carries any (dev chain only).
    pub edits_root: Option<B256>,
}

/// `extra_data` that is not a pipe header's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "extra data of {0} bytes is not pipe's (16, 48 or 80: price, units, results root, edits hash)"
)]
pub struct FieldsError(pub usize);

impl InferenceFields {
    /// The header's `extra_data`.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(80);
        out.extend_from_slice(&self.gas_price.to_be_bytes());
        out.extend_from_slice(&self.units.to_be_bytes());
        match (self.results_root, self.edits_root) {
            (None, None) => {}
            (Some(root), None) => out.extend_from_slice(root.as_slice()),
            (results, Some(edits)) => {
                out.extend_from_slice(results.unwrap_or_default().as_slice());
                out.extend_from_slice(edits.as_slice());
            }
        }
        out.into()
    }

    /// Strict: exactly 16, 48 or 80 bytes (80 with a nonzero edits hash).
    pub fn decode(extra: &[u8]) -> Result<Self, FieldsError> {
        if ![16, 48, 80].contains(&extra.len()) {
            return Err(FieldsError(extra.len()));
        }
        let hash = |i: usize| Some(B256::from_slice(&extra[i..i + 32])).filter(|h| !h.is_zero());
        let (results_root, edits_root) = match extra.len() {
            16 => (None, None),
            48 => (Some(B256::from_slice(&extra[16..48])), None),
            _ => (hash(16), Some(hash(48).ok_or(FieldsError(extra.len()))?)),
        };
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&extra[i..i + 8]);
            u64::from_be_bytes(b)
        };
        Ok(Self {
            gas_price: word(0),
            units: word(8),
            results_root,
            edits_root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_reject_other_lengths() {
        for (root, edits, len) in [
            (None, None, 16),
            (Some(B256::repeat_byte(7)), None, 48),
            (None, Some(B256::repeat_byte(8)), 80),
            (Some(B256::repeat_byte(7)), Some(B256::repeat_byte(8)), 80),
        ] {
            let f = InferenceFields {
                gas_price: 12,
                units: 3_000,
                results_root: root,
                edits_root: edits,
            };
            let bytes = f.encode();
            assert_eq!(bytes.len(), len);
            assert_eq!(InferenceFields::decode(&bytes), Ok(f));
        }
        // 80 bytes whose edits hash is zero say nothing the shorter forms do not: refused.
        assert_eq!(InferenceFields::decode(&[0; 80]), Err(FieldsError(80)));
        for len in [0, 15, 17, 32, 47, 49] {
            assert_eq!(
                InferenceFields::decode(&vec![0; len]),
                Err(FieldsError(len))
            );
        }
    }

    fn after(pricing: &InferencePricing, price: u64, units: u64) -> u64 {
        pricing.next_price(Some(&InferenceFields {
            gas_price: price,
            units,
            results_root: None,
            edits_root: None,
        }))
    }

    #[test]
    fn the_price_moves_toward_the_target_by_at_most_an_eighth() {
        let p = InferencePricing {
            initial_price: 1_000,
            min_price: 1,
            target_units: 100,
            max_change_denominator: 8,
        };
        assert_eq!(p.next_price(None), 1_000);
        assert_eq!(after(&p, 1_000, 100), 1_000, "at target: unchanged");
        assert_eq!(after(&p, 1_000, 200), 1_125, "twice the target: +1/8");
        assert_eq!(after(&p, 1_000, 10_000), 1_125, "far above: still +1/8");
        assert_eq!(after(&p, 1_000, 150), 1_062);
        assert_eq!(after(&p, 1_000, 0), 875, "empty: -1/8");
        assert_eq!(after(&p, 1_000, 50), 938);
    }

    #[test]
    fn sustained_load_raises_and_idleness_lowers_to_the_floor() {
        let p = InferencePricing {
            initial_price: 10,
            min_price: 2,
            target_units: 1_000,
            max_change_denominator: 8,
        };
        // A small price still climbs: the step is at least 1.
        let mut price = p.next_price(None);
        let mut seen = vec![price];
        for _ in 0..20 {
            price = after(&p, price, 5_000);
            seen.push(price);
        }
        assert!(seen.windows(2).all(|w| w[1] > w[0]), "{seen:?}");
        assert!(
            seen.windows(2).all(|w| w[1] * 8 <= w[0] * 9 + 8),
            "{seen:?}"
        );
        for _ in 0..200 {
            price = after(&p, price, 0);
        }
        assert_eq!(price, 2, "idle: down to the floor and no further");
        assert_eq!(after(&p, 0, 0), 2, "a zero price is read as the floor");
    }
}
