//! A validator's key file and the validator set file, as `pipe keys generate` writes them and
//! `pipe node --validator` reads them.
//!
//! - Key file: the ed25519 private key as 64 hex digits on one line. Written with mode 0600.
//! - Validator set (JSON): who validates and where each listens for peers, the block time and
//!   the result-check policy. Every validator must use the same set; the chain id is part of
//!   the signing namespace, so votes for one chain are worthless on another. The set is a file
//!   of its own, or the `pipeValidators` field of the genesis file's `config`
//!   ([`ValidatorSet::from_genesis`]), so one genesis file describes the whole chain.
//!
//! ```json
//! {
//!   "blockTimeMs": 1000,
//!   "resultCheck": "all",
//!   "validators": [
//!     { "publicKey": "8a88e3dd…", "address": "127.0.0.1:30400" }
//!   ]
//! }
//! ```

use std::{net::SocketAddr, path::Path, time::Duration};

use alloy_primitives::{hex, keccak256};
use commonware_codec::{DecodeExt, Encode};
use commonware_cryptography::{
    Signer,
    ed25519::{PrivateKey, PublicKey},
};
use pipe_chain::CheckPolicy;
use serde::{Deserialize, Serialize};

/// Why a key or set file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not 64 hex digits of an ed25519 private key")]
    BadKey(String),
    #[error("validator set: {0}")]
    BadSet(String),
}

/// A fresh key from the operating system's randomness.
pub fn generate() -> PrivateKey {
    loop {
        // 32 bytes from the OS's generator (through the secp256k1 signer's key generation);
        // any 32 bytes are an ed25519 seed.
        let seed = alloy_signer_local::PrivateKeySigner::random().to_bytes();
        if let Ok(key) = PrivateKey::decode(seed.to_vec()) {
            return key;
        }
    }
}

/// The key as hex.
pub fn private_hex(key: &PrivateKey) -> String {
    hex::encode(key.encode())
}

/// A public key as hex.
pub fn public_hex(key: &PublicKey) -> String {
    hex::encode(key.encode())
}

/// A public key from hex.
pub fn parse_public(text: &str) -> Result<PublicKey, KeyError> {
    let bytes = hex::decode(text.trim()).map_err(|e| KeyError::BadSet(format!("{text}: {e}")))?;
    PublicKey::decode(bytes)
        .map_err(|e| KeyError::BadSet(format!("{text}: not an ed25519 public key ({e})")))
}

/// The Ethereum address a validator's blocks pay fees to: the last 20 bytes of the keccak256
/// of its public key.
pub fn beneficiary(key: &PublicKey) -> alloy_primitives::Address {
    alloy_primitives::Address::from_slice(&keccak256(key.encode())[12..])
}

/// Writes `key` to `path` (mode 0600 on Unix).
pub fn write_key(path: &Path, key: &PrivateKey) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut file, format!("{}\n", private_hex(key)).as_bytes()).map_err(io)
}

/// Reads a key file.
pub fn read_key(path: &Path) -> Result<PrivateKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let bytes =
        hex::decode(text.trim()).map_err(|_| KeyError::BadKey(path.display().to_string()))?;
    PrivateKey::decode(bytes).map_err(|_| KeyError::BadKey(path.display().to_string()))
}

/// Where a genesis file names its validator set: `config.pipeValidators`.
pub const GENESIS_FIELD: &str = "pipeValidators";

/// One validator in the set file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ValidatorEntry {
    pub public_key: String,
    /// Where it accepts connections from the other validators.
    pub address: SocketAddr,
}

/// The validator set file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ValidatorSetFile {
    pub block_time_ms: u64,
    /// `all`, `off` or `1/N`.
    #[serde(default = "default_check")]
    pub result_check: String,
    pub validators: Vec<ValidatorEntry>,
}

fn default_check() -> String {
    "all".into()
}

/// The validator set, parsed.
#[derive(Clone, Debug)]
pub struct ValidatorSet {
    pub block_time: Duration,
    pub result_check: CheckPolicy,
    pub validators: Vec<(PublicKey, SocketAddr)>,
}

impl ValidatorSet {
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let file: ValidatorSetFile =
            serde_json::from_str(&text).map_err(|e| KeyError::BadSet(e.to_string()))?;
        Self::parse(&file)
    }

    /// The set named in a geth-style genesis file's `config.pipeValidators`.
    pub fn from_genesis(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let genesis: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| KeyError::BadSet(e.to_string()))?;
        let set = genesis
            .get("config")
            .and_then(|c| c.get(GENESIS_FIELD))
            .ok_or_else(|| {
                KeyError::BadSet(format!(
                    "{} names no validators (config.{GENESIS_FIELD})",
                    path.display()
                ))
            })?;
        let file: ValidatorSetFile =
            serde_json::from_value(set.clone()).map_err(|e| KeyError::BadSet(e.to_string()))?;
        Self::parse(&file)
    }

    pub fn parse(file: &ValidatorSetFile) -> Result<Self, KeyError> {
        if file.validators.is_empty() {
            return Err(KeyError::BadSet("no validators".into()));
        }
        if file.block_time_ms < 1000 || !file.block_time_ms.is_multiple_of(1000) {
            return Err(KeyError::BadSet(
                "blockTimeMs must be a whole number of seconds (header timestamps are seconds)"
                    .into(),
            ));
        }
        let mut validators = Vec::new();
        for v in &file.validators {
            let pk = parse_public(&v.public_key)?;
            if validators.iter().any(|(p, _)| *p == pk) {
                return Err(KeyError::BadSet(format!(
                    "{} is listed twice",
                    v.public_key
                )));
            }
            validators.push((pk, v.address));
        }
        Ok(Self {
            block_time: Duration::from_millis(file.block_time_ms),
            result_check: file.result_check.parse().map_err(KeyError::BadSet)?,
            validators,
        })
    }

    /// Where `key` listens, if it is a validator.
    pub fn address_of(&self, key: &PrivateKey) -> Option<SocketAddr> {
        let me = key.public_key();
        self.validators
            .iter()
            .find(|(p, _)| *p == me)
            .map(|(_, a)| *a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_sets_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate();
        let path = dir.path().join("k");
        write_key(&path, &key).unwrap();
        assert_eq!(read_key(&path).unwrap().public_key(), key.public_key());
        assert!(write_key(&path, &key).is_err(), "never overwrites a key");
        let file = ValidatorSetFile {
            block_time_ms: 1000,
            result_check: "1/4".into(),
            validators: vec![ValidatorEntry {
                public_key: public_hex(&key.public_key()),
                address: "127.0.0.1:30400".parse().unwrap(),
            }],
        };
        let set = ValidatorSet::parse(&file).unwrap();
        assert_eq!(set.result_check, CheckPolicy::OneIn(4));
        assert_eq!(
            set.address_of(&key),
            Some("127.0.0.1:30400".parse().unwrap())
        );
        assert_eq!(set.address_of(&generate()), None);
        let mut twice = file.clone();
        twice.validators.push(twice.validators[0].clone());
        assert!(ValidatorSet::parse(&twice).is_err());
        let genesis = dir.path().join("genesis.json");
        std::fs::write(
            &genesis,
            serde_json::json!({"config": {"chainId": 7, GENESIS_FIELD: file}, "alloc": {}})
                .to_string(),
        )
        .unwrap();
        let named = ValidatorSet::from_genesis(&genesis).unwrap();
        assert_eq!(named.validators, set.validators);
        std::fs::write(&genesis, r#"{"config": {"chainId": 7}, "alloc": {}}"#).unwrap();
        assert!(ValidatorSet::from_genesis(&genesis).is_err());
        std::fs::write(path.with_extension("bad"), "zz").unwrap();
        assert!(read_key(&path.with_extension("bad")).is_err());
    }
}
