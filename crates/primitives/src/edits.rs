//! State edits: the dev chain's `anvil_setBalance`, `anvil_setCode`, `anvil_setStorageAt`,
//! `anvil_setNonce`, `evm_revert`, `anvil_loadState` and `anvil_reset`, as data a block carries.
//!
//! # Why in a block
//! anvil edits its state in place; a chain whose every block must replay cannot. Here an edit
//! is committed like anything else that changes state: the dev chain seals a block that
//! carries the edits (and no transactions), its executor applies them after the block's system
//! calls, the state root covers the result, and the header commits to the list itself
//! (`extra_data`: [`crate::header`]). A follower and `pipe replay` apply the same edits from the
//! block and reach the same root; nothing is ever rewritten, so a revert is a forward edit
//! that puts the old values back.
//!
//! Validators never carry edits: the consensus block codec has no room for them, so a block
//! whose header claims edits fails replay there.
//!
//! # Impersonation
//! `anvil_impersonateAccount` lets the dev chain send transactions from an address whose key
//! nobody has. Such a transaction carries [`impersonation_signature`] (r is the sender's
//! address, s is 0: no key signs that, and it recovers to nobody), and the block
//! that includes it lists it ([`StateEdit::Impersonated`], after the state edits), so the
//! header commits to every sender that was not proven by a signature. A follower takes the
//! sender from that list; a block without it fails replay, as the signature recovers to
//! nobody. Only a dev chain takes either ([`crate::ChainConfig::dev_controls`]).
//!
//! # Encoding
//! An RLP list of `[kind, address, slot, value]`, in the order they apply; the commitment is
//! the keccak of that encoding.

use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_rlp::{Decodable, Encodable, RlpDecodable, RlpEncodable};

/// Most edits one block carries.
pub const MAX_EDITS: usize = 100_000;
/// Largest encoded edit list one block carries.
/// (16 MiB: a block carrying it, hex-encoded for a follower, stays under the RPC's 64 MiB
/// response bound.)
pub const MAX_EDITS_BYTES: usize = 16 * 1024 * 1024;
/// Largest code one edit installs (anvil takes any; 1 MiB is far past EIP-170 and EIP-7907).
pub const MAX_EDIT_CODE: usize = 1024 * 1024;

/// One change to the state, applied in order after the block's system calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateEdit {
    /// The account's balance (the account is created if missing).
    Balance { address: Address, balance: U256 },
    /// The account's nonce.
    Nonce { address: Address, nonce: u64 },
    /// The account's code (empty: none).
    Code { address: Address, code: Bytes },
    /// One storage slot (zero: cleared).
    Storage {
        address: Address,
        slot: B256,
        value: U256,
    },
    /// The account and all of its storage are removed.
    Delete { address: Address },
    /// Not a change: the block's transaction `tx` is sent by `address` without a signature
    /// (it carries [`impersonation_signature`]). Listed after the state edits, in block order.
    Impersonated { address: Address, tx: B256 },
}

/// The signature an impersonated transaction carries: r is `sender`, s is 0, parity even.
/// s = 0 is no ECDSA signature (it recovers to nobody), so no signed transaction can take
/// this form; different senders' otherwise equal transactions have different hashes.
pub fn impersonation_signature(sender: Address) -> alloy_primitives::Signature {
    alloy_primitives::Signature::new(U256::from_be_slice(sender.as_slice()), U256::ZERO, false)
}

/// The sender a transaction claims by carrying [`impersonation_signature`], if it does. A
/// claim only: the pool honours it for impersonated addresses on the dev chain, a block only
/// when it lists the transaction ([`StateEdit::Impersonated`]).
pub fn impersonated_sender(tx: &alloy_consensus::TxEnvelope) -> Option<Address> {
    let sig = tx.signature();
    if !sig.s().is_zero() || sig.v() || sig.r() >= (U256::from(1) << 160) {
        return None;
    }
    let r = sig.r().to_be_bytes::<32>();
    Some(Address::from_slice(&r[12..]))
}

impl StateEdit {
    pub fn address(&self) -> Address {
        match self {
            Self::Balance { address, .. }
            | Self::Nonce { address, .. }
            | Self::Code { address, .. }
            | Self::Storage { address, .. }
            | Self::Delete { address }
            | Self::Impersonated { address, .. } => *address,
        }
    }

    fn raw(&self) -> RawEdit {
        let (kind, address, slot, value) = match self {
            Self::Balance { address, balance } => (0, *address, B256::ZERO, word(*balance)),
            Self::Nonce { address, nonce } => (1, *address, B256::ZERO, word(U256::from(*nonce))),
            Self::Code { address, code } => (2, *address, B256::ZERO, code.clone()),
            Self::Storage {
                address,
                slot,
                value,
            } => (3, *address, *slot, word(*value)),
            Self::Delete { address } => (4, *address, B256::ZERO, Bytes::new()),
            Self::Impersonated { address, tx } => (5, *address, *tx, Bytes::new()),
        };
        RawEdit {
            kind,
            address,
            slot,
            value,
        }
    }

    fn from_raw(raw: RawEdit) -> Result<Self, EditsError> {
        let RawEdit {
            kind,
            address,
            slot,
            value,
        } = raw;
        let number = || -> Result<U256, EditsError> {
            if value.len() > 32 {
                return Err(EditsError::Malformed("a value longer than 32 bytes".into()));
            }
            Ok(U256::from_be_slice(&value))
        };
        let no_slot = |edit: Self| {
            if slot.is_zero() {
                Ok(edit)
            } else {
                Err(EditsError::Malformed("a slot on an account edit".into()))
            }
        };
        match kind {
            0 => no_slot(Self::Balance {
                address,
                balance: number()?,
            }),
            1 => no_slot(Self::Nonce {
                address,
                nonce: u64::try_from(number()?)
                    .map_err(|_| EditsError::Malformed("a nonce over 64 bits".into()))?,
            }),
            2 if code_error(&value).is_some() => Err(code_error(&value).expect("checked")),
            2 => no_slot(Self::Code {
                address,
                code: value,
            }),
            3 => Ok(Self::Storage {
                address,
                slot,
                value: number()?,
            }),
            4 if value.is_empty() => no_slot(Self::Delete { address }),
            4 => Err(EditsError::Malformed("a value on a deletion".into())),
            5 if value.is_empty() => Ok(Self::Impersonated { address, tx: slot }),
            5 => Err(EditsError::Malformed(
                "a value on an impersonated sender".into(),
            )),
            k => Err(EditsError::Malformed(format!("unknown edit kind {k}"))),
        }
    }
}

/// Why `code` cannot be installed: too large, or starting with EIP-7702's `0xef01` without
/// being a delegation designator (`0xef0100` and an address), which no EVM runs.
fn code_error(code: &[u8]) -> Option<EditsError> {
    if code.len() > MAX_EDIT_CODE {
        return Some(EditsError::Malformed(format!(
            "code of {} bytes (at most {MAX_EDIT_CODE})",
            code.len()
        )));
    }
    if code.starts_with(&[0xef, 0x01]) && (code.len() != 23 || code[2] != 0) {
        return Some(EditsError::Malformed(
            "code starting with 0xef01 that is not an EIP-7702 delegation (0xef0100 and 20 bytes)"
                .into(),
        ));
    }
    None
}

/// A number as its shortest big-endian bytes (the canonical form: decoding checks it).
fn word(v: U256) -> Bytes {
    let bytes = v.to_be_bytes_trimmed_vec();
    Bytes::from(bytes)
}

#[derive(RlpEncodable, RlpDecodable)]
struct RawEdit {
    kind: u8,
    address: Address,
    slot: B256,
    value: Bytes,
}

/// Why a list of edits was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditsError {
    #[error("state edits: {0}")]
    Malformed(String),
    #[error(
        "state edits: {count} edits of {bytes} bytes (at most {MAX_EDITS} and {MAX_EDITS_BYTES} bytes)"
    )]
    TooLarge { count: usize, bytes: usize },
}

/// The edits one block applies, in order; cheap to clone. Empty for every block but the dev
/// chain's edit blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateEdits(Arc<Vec<StateEdit>>);

impl StateEdits {
    /// A list within the bounds ([`MAX_EDITS`], [`MAX_EDITS_BYTES`], [`MAX_EDIT_CODE`]).
    pub fn new(edits: Vec<StateEdit>) -> Result<Self, EditsError> {
        let out = Self(Arc::new(edits));
        if let Some(e) = out.0.iter().find_map(|e| match e {
            StateEdit::Code { code, .. } => code_error(code),
            _ => None,
        }) {
            return Err(e);
        }
        let bytes = out.encode().len();
        if out.0.len() > MAX_EDITS || bytes > MAX_EDITS_BYTES {
            return Err(EditsError::TooLarge {
                count: out.0.len(),
                bytes,
            });
        }
        Ok(out)
    }

    pub fn edits(&self) -> &[StateEdit] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The RLP list.
    pub fn encode(&self) -> Vec<u8> {
        let raw: Vec<RawEdit> = self.0.iter().map(StateEdit::raw).collect();
        let mut out = Vec::new();
        raw.encode(&mut out);
        out
    }

    /// Strict: canonical RLP (numbers without leading zeros) within the bounds.
    pub fn decode(bytes: &[u8]) -> Result<Self, EditsError> {
        if bytes.len() > MAX_EDITS_BYTES {
            return Err(EditsError::TooLarge {
                count: 0,
                bytes: bytes.len(),
            });
        }
        let mut buf = bytes;
        let raw =
            Vec::<RawEdit>::decode(&mut buf).map_err(|e| EditsError::Malformed(e.to_string()))?;
        if !buf.is_empty() {
            return Err(EditsError::Malformed("trailing bytes".into()));
        }
        let edits = raw
            .into_iter()
            .map(StateEdit::from_raw)
            .collect::<Result<Vec<_>, _>>()?;
        let out = Self::new(edits)?;
        if out.encode() != bytes {
            return Err(EditsError::Malformed("not canonical".into()));
        }
        Ok(out)
    }

    /// The state edits alone, without the impersonated senders: what applies before the
    /// transactions.
    pub fn state_only(&self) -> Self {
        if !self
            .0
            .iter()
            .any(|e| matches!(e, StateEdit::Impersonated { .. }))
        {
            return self.clone();
        }
        Self(Arc::new(
            self.0
                .iter()
                .filter(|e| !matches!(e, StateEdit::Impersonated { .. }))
                .cloned()
                .collect(),
        ))
    }

    /// These edits followed by `impersonated` (the block's impersonated senders).
    pub fn with_senders(&self, impersonated: Vec<StateEdit>) -> Self {
        if impersonated.is_empty() {
            return self.clone();
        }
        let mut all = self.0.as_ref().clone();
        all.extend(impersonated);
        Self(Arc::new(all))
    }

    /// Every transaction the block lists as sent unsigned, with its sender.
    pub fn impersonated_senders(&self) -> std::collections::HashMap<B256, Address> {
        self.0
            .iter()
            .filter_map(|e| match e {
                StateEdit::Impersonated { address, tx } => Some((*tx, *address)),
                _ => None,
            })
            .collect()
    }

    /// The sender the block lists for transaction `tx` ([`StateEdit::Impersonated`]).
    pub fn impersonated(&self, tx: &B256) -> Option<Address> {
        self.0.iter().find_map(|e| match e {
            StateEdit::Impersonated { address, tx: t } if t == tx => Some(*address),
            _ => None,
        })
    }

    /// What the header commits to: `None` for no edits, else the keccak of the encoding.
    pub fn commitment(&self) -> Option<B256> {
        (!self.is_empty()).then(|| keccak256(self.encode()))
    }

    /// The nonce each edited account is left with, where the edits decide it (a nonce edit,
    /// or a deletion not followed by one): what the pool must learn.
    pub fn nonces(&self) -> Vec<(Address, u64)> {
        // The last edit of each account decides; first-seen order is kept.
        let mut at: std::collections::HashMap<Address, usize> = Default::default();
        let mut out: Vec<(Address, u64)> = Vec::new();
        for e in self.0.iter() {
            let (address, nonce) = match e {
                StateEdit::Nonce { address, nonce } => (*address, *nonce),
                StateEdit::Delete { address } => (*address, 0),
                _ => continue,
            };
            match at.get(&address) {
                Some(i) => out[*i].1 = nonce,
                None => {
                    at.insert(address, out.len());
                    out.push((address, nonce));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StateEdits {
        let a = Address::repeat_byte(1);
        StateEdits::new(vec![
            StateEdit::Delete { address: a },
            StateEdit::Balance {
                address: a,
                balance: U256::from(10).pow(U256::from(21)),
            },
            StateEdit::Nonce {
                address: a,
                nonce: 7,
            },
            StateEdit::Code {
                address: a,
                code: Bytes::from_static(&[0x60, 0x00]),
            },
            StateEdit::Storage {
                address: a,
                slot: B256::with_last_byte(3),
                value: U256::ZERO,
            },
            StateEdit::Impersonated {
                address: a,
                tx: B256::with_last_byte(4),
            },
        ])
        .unwrap()
    }

    #[test]
    fn the_impersonation_signature_names_its_sender_and_nothing_else_does() {
        use alloy_consensus::{SignableTransaction, TxLegacy};
        let sender = Address::repeat_byte(0xab);
        let tx = TxLegacy::default();
        let envelope: alloy_consensus::TxEnvelope = tx
            .clone()
            .into_signed(impersonation_signature(sender))
            .into();
        assert_eq!(impersonated_sender(&envelope), Some(sender));
        // It recovers to nobody: no signed transaction can take this form.
        use alloy_consensus::transaction::SignerRecoverable;
        assert!(envelope.recover_signer().is_err());
        let other: alloy_consensus::TxEnvelope = tx
            .into_signed(alloy_primitives::Signature::new(
                U256::from(5),
                U256::from(2),
                false,
            ))
            .into();
        assert_eq!(impersonated_sender(&other), None);
        let edits = sample();
        assert_eq!(
            edits.impersonated(&B256::with_last_byte(4)),
            Some(Address::repeat_byte(1))
        );
        assert_eq!(edits.state_only().len(), edits.len() - 1);
    }

    #[test]
    fn edits_round_trip_and_commit() {
        let edits = sample();
        let bytes = edits.encode();
        assert_eq!(StateEdits::decode(&bytes), Ok(edits.clone()));
        assert_eq!(edits.commitment(), Some(keccak256(&bytes)));
        assert_eq!(StateEdits::default().commitment(), None);
        assert_eq!(edits.nonces(), vec![(Address::repeat_byte(1), 7)]);
    }

    #[test]
    fn decoding_is_strict() {
        let good = sample().encode();
        assert!(StateEdits::decode(&good[..good.len() - 1]).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(StateEdits::decode(&trailing).is_err());
        // A balance with a leading zero byte is not canonical.
        let raw = vec![RawEdit {
            kind: 0,
            address: Address::ZERO,
            slot: B256::ZERO,
            value: Bytes::from_static(&[0, 1]),
        }];
        let mut bytes = Vec::new();
        raw.encode(&mut bytes);
        assert!(StateEdits::decode(&bytes).is_err());
        for (kind, slot, value) in [
            (9u8, B256::ZERO, Bytes::new()),
            (0, B256::ZERO, Bytes::from(vec![1; 33])),
            (1, B256::ZERO, Bytes::from(vec![1; 9])),
            (0, B256::with_last_byte(1), Bytes::new()),
            (4, B256::ZERO, Bytes::from_static(&[1])),
        ] {
            let raw = vec![RawEdit {
                kind,
                address: Address::ZERO,
                slot,
                value,
            }];
            let mut bytes = Vec::new();
            raw.encode(&mut bytes);
            assert!(StateEdits::decode(&bytes).is_err(), "kind {kind}");
        }
        for code in [
            vec![0; MAX_EDIT_CODE + 1],
            vec![0xef, 0x01],
            vec![
                0xef, 0x01, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ] {
            let edit = StateEdits::new(vec![StateEdit::Code {
                address: Address::ZERO,
                code: Bytes::from(code),
            }]);
            assert!(edit.is_err());
        }
        let mut delegation = vec![0xef, 0x01, 0x00];
        delegation.extend_from_slice(&[7; 20]);
        assert!(
            StateEdits::new(vec![StateEdit::Code {
                address: Address::ZERO,
                code: Bytes::from(delegation),
            }])
            .is_ok()
        );
    }
}
