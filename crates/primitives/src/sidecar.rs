//! The inference sidecar: the results a block used, carried with the block and committed to by
//! its header.
//!
//! # Shape
//! One [`InferenceResult`] per distinct request key the block's transactions asked for, sorted
//! by key, no duplicates. A result is what the precompile answered: either the ABI-encoded
//! return data of `runModelInference` (a `ModelOutput`), or the model's failure reason, which the
//! precompile reverts with. Both are deterministic facts about the request, so both are
//! committed; infrastructure failures (a worker timing out) never are.
//!
//! # Commitment
//! The sidecar root is the Merkle-Patricia root of the map `key → rlp(result)` (keys are
//! hashes, so their order is the trie's order), built the way Ethereum builds its other roots.
//! A block with results carries that root in its header's `extra_data` (after the inference
//! price and units: [`crate::header`]); a block without results carries none. The header hash
//! therefore commits to every output, and one result can be proven against a header with an
//! ordinary trie proof.

use alloy_primitives::{B256, Bytes, keccak256};
use alloy_rlp::{Decodable, Encodable, RlpDecodable, RlpEncodable};
use alloy_trie::{EMPTY_ROOT_HASH, HashBuilder, Nibbles};

/// A committed answer to one inference request. Its JSON form (camelCase, hex bytes) is what a
/// remote worker answers with.
#[derive(
    Clone, Debug, PartialEq, Eq, RlpEncodable, RlpDecodable, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct InferenceResult {
    /// `keccak256(abi.encode(request))`.
    pub key: B256,
    /// [`InferenceResult::OUTPUT`] or [`InferenceResult::FAILURE`].
    pub status: u8,
    /// The return data (status `OUTPUT`) or the UTF-8 revert reason (status `FAILURE`).
    pub payload: Bytes,
    /// The worker's signature over [`InferenceResult::signing_hash`]; empty in VANILLA mode.
    pub signature: Bytes,
}

impl InferenceResult {
    pub const OUTPUT: u8 = 0;
    pub const FAILURE: u8 = 1;

    /// A successful output: the ABI-encoded return data of `runModelInference`.
    pub fn output(key: B256, returndata: Bytes) -> Self {
        Self {
            key,
            status: Self::OUTPUT,
            payload: returndata,
            signature: Bytes::new(),
        }
    }

    /// A model failure: the precompile reverts with `reason`.
    pub fn failure(key: B256, reason: &str) -> Self {
        Self {
            key,
            status: Self::FAILURE,
            payload: Bytes::copy_from_slice(reason.as_bytes()),
            signature: Bytes::new(),
        }
    }

    /// The output's return data, or the failure reason.
    pub fn as_result(&self) -> Result<&Bytes, String> {
        match self.status {
            Self::OUTPUT => Ok(&self.payload),
            Self::FAILURE => Err(String::from_utf8_lossy(&self.payload).into_owned()),
            other => Err(format!("invalid result status {other}")),
        }
    }

    /// What a TEE worker signs: `keccak256(key ‖ status ‖ keccak256(payload))`.
    pub fn signing_hash(&self) -> B256 {
        let mut buf = [0u8; 65];
        buf[..32].copy_from_slice(self.key.as_slice());
        buf[32] = self.status;
        buf[33..].copy_from_slice(keccak256(&self.payload).as_slice());
        keccak256(buf)
    }
}

/// Why a sidecar's bytes are not a valid sidecar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SidecarError {
    #[error("malformed sidecar: {0}")]
    Malformed(String),
    #[error("sidecar keys are not strictly increasing at {0}")]
    Unsorted(B256),
    #[error("sidecar result {0} has invalid status {1}")]
    Status(B256, u8),
}

/// The results one block used, sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sidecar(Vec<InferenceResult>);

impl Sidecar {
    /// From results in any order; later duplicates of a key are dropped.
    pub fn new(mut results: Vec<InferenceResult>) -> Self {
        results.sort_by_key(|r| r.key);
        results.dedup_by(|a, b| a.key == b.key);
        Self(results)
    }

    pub fn results(&self) -> &[InferenceResult] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, key: &B256) -> Option<&InferenceResult> {
        self.0
            .binary_search_by(|r| r.key.cmp(key))
            .ok()
            .map(|i| &self.0[i])
    }

    /// The Merkle-Patricia root of `key → rlp(result)`.
    pub fn root(&self) -> B256 {
        if self.0.is_empty() {
            return EMPTY_ROOT_HASH;
        }
        let mut builder = HashBuilder::default();
        let mut buf = Vec::new();
        for r in &self.0 {
            buf.clear();
            r.encode(&mut buf);
            builder.add_leaf(Nibbles::unpack(r.key), &buf);
        }
        builder.root()
    }

    /// The results root a header carrying this sidecar commits to (none when empty).
    pub fn commitment(&self) -> Option<B256> {
        (!self.0.is_empty()).then(|| self.root())
    }

    /// RLP list of the results.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        alloy_rlp::encode_list(&self.0, &mut out);
        out
    }

    /// Strict decoding: well-formed RLP, nothing trailing, keys strictly increasing, known
    /// statuses.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, SidecarError> {
        let results = Vec::<InferenceResult>::decode(&mut bytes)
            .map_err(|e| SidecarError::Malformed(e.to_string()))?;
        if !bytes.is_empty() {
            return Err(SidecarError::Malformed("trailing bytes".into()));
        }
        for (i, r) in results.iter().enumerate() {
            if r.status > InferenceResult::FAILURE {
                return Err(SidecarError::Status(r.key, r.status));
            }
            if i > 0 && results[i - 1].key >= r.key {
                return Err(SidecarError::Unsorted(r.key));
            }
        }
        Ok(Self(results))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::b256;

    #[test]
    fn sorted_deduped_round_trip_and_root() {
        let a = InferenceResult::output(B256::repeat_byte(2), Bytes::from_static(b"out"));
        let b = InferenceResult::failure(B256::repeat_byte(1), "model error: x");
        let s = Sidecar::new(vec![a.clone(), b.clone(), a.clone()]);
        assert_eq!(s.results(), &[b.clone(), a.clone()]);
        assert_eq!(Sidecar::decode(&s.encode()).unwrap(), s);
        assert_eq!(s.get(&a.key), Some(&a));
        assert_eq!(b.as_result().unwrap_err(), "model error: x");
        // The root is the standard trie root, so alloy's own trie gives the same.
        let mut builder = HashBuilder::default();
        for r in s.results() {
            builder.add_leaf(Nibbles::unpack(r.key), &alloy_rlp::encode(r));
        }
        assert_eq!(s.root(), builder.root());
        assert_eq!(s.commitment(), Some(s.root()));
        assert_eq!(Sidecar::default().commitment(), None);
        // Any change to an output changes the root.
        let mut tampered = a.clone();
        tampered.payload = Bytes::from_static(b"ouT");
        assert_ne!(Sidecar::new(vec![b, tampered]).root(), s.root());
        assert_ne!(
            a.signing_hash(),
            b256!("0000000000000000000000000000000000000000000000000000000000000000")
        );
    }

    #[test]
    fn decoding_is_strict() {
        let a = InferenceResult::output(B256::repeat_byte(2), Bytes::new());
        let b = InferenceResult::output(B256::repeat_byte(1), Bytes::new());
        let mut unsorted = Vec::new();
        alloy_rlp::encode_list(&[a.clone(), b], &mut unsorted);
        assert!(matches!(
            Sidecar::decode(&unsorted),
            Err(SidecarError::Unsorted(_))
        ));
        let mut dup = Vec::new();
        alloy_rlp::encode_list(&[a.clone(), a.clone()], &mut dup);
        assert!(Sidecar::decode(&dup).is_err());
        let mut bad = a.clone();
        bad.status = 7;
        let mut raw = Vec::new();
        alloy_rlp::encode_list(&[bad], &mut raw);
        assert!(matches!(
            Sidecar::decode(&raw),
            Err(SidecarError::Status(_, 7))
        ));
        let mut trailing = Sidecar::new(vec![a]).encode();
        trailing.push(0);
        assert!(Sidecar::decode(&trailing).is_err());
        assert!(Sidecar::decode(&[0xff, 0xff]).is_err());
    }
}
