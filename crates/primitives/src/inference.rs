//! The inference vocabulary shared by the precompile, the model store, the runtime and RPC:
//! model ids, tensors, model metadata and the Number conversion rules.
//!
//! # Model ids
//! A model's id is the content hash of its ONNX bytes, written as an IPFS CIDv1: multibase
//! `b` (RFC 4648 base32, lower case, no padding) over `0x01` (CID version 1), `0x55` (the `raw`
//! codec), `0x12 0x20` (sha2-256, 32 bytes) and the SHA-256 digest of the file. That is the
//! string contracts pass as `modelCID` (it starts `bafkrei`), and it is the same CID that
//! `ipfs add --cid-version 1 --raw-leaves` gives a file small enough to fit one block.
//!
//! # Numbers
//! Contracts speak `Number { int128 value; int128 decimals }`, meaning `value × 10^-decimals`.
//! Both directions are fixed here so every node derives identical bytes:
//! - **in**: `value` is converted to the nearest `f64`, divided (or, for negative decimals,
//!   multiplied) by the exact `f64` power of ten, and the quotient rounded to the nearest `f32`.
//!   Decimals outside [`MIN_INPUT_DECIMALS`, `MAX_INPUT_DECIMALS`] are rejected.
//! - **out**: a float output `x` becomes `Number(round_half_even(f64(x) × 10^d), d)` where `d` is
//!   the model's declared decimals (at most [`MAX_OUTPUT_DECIMALS`]). The product is one IEEE
//!   multiplication and the rounding is ties-to-even, so the result does not depend on the
//!   platform. NaN, infinities and values beyond `int128` are a model error, never a number.
//!   Integer outputs (class labels) are `Number(v, 0)`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The CIDv1 prefix in front of the digest: version 1, raw codec, sha2-256, 32 bytes.
const CID_PREFIX: [u8; 4] = [0x01, 0x55, 0x12, 0x20];

/// Content id of a model: the SHA-256 of its bytes. See the module docs for the text form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(pub [u8; 32]);

impl ModelId {
    /// The id of these model bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(36);
        raw.extend_from_slice(&CID_PREFIX);
        raw.extend_from_slice(&self.0);
        let encoded = data_encoding::BASE32_NOPAD
            .encode(&raw)
            .to_ascii_lowercase();
        write!(f, "b{encoded}")
    }
}

impl fmt::Debug for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a model id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model id {0:?}: expected a CIDv1 (raw, sha2-256) such as \"bafkrei…\"")]
pub struct ModelIdError(pub String);

impl FromStr for ModelId {
    type Err = ModelIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ModelIdError(s.chars().take(80).collect());
        // 1 multibase char + 58 base32 chars for 36 bytes; check before decoding anything.
        if s.len() != 59 || !s.starts_with('b') {
            return Err(err());
        }
        let body = &s[1..];
        if body
            .bytes()
            .any(|b| !(b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)))
        {
            return Err(err());
        }
        let raw = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| err())?;
        if raw.len() != 36 || raw[..4] != CID_PREFIX {
            return Err(err());
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&raw[4..]);
        let id = Self(digest);
        // Reject non-canonical encodings (stray bits in the last character).
        if id.to_string() != s {
            return Err(err());
        }
        Ok(id)
    }
}

impl Serialize for ModelId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ModelId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Element type of a model input or output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// Any float type; computed as f32.
    Float32,
    /// Any integer or boolean type; carried as i64.
    Int64,
    /// UTF-8 strings.
    String,
}

/// The values of one tensor, flattened row-major.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dtype", content = "values", rename_all = "lowercase")]
pub enum TensorData {
    Float32(Vec<f32>),
    Int64(Vec<i64>),
    String(Vec<String>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::Float32(v) => v.len(),
            Self::Int64(v) => v.len(),
            Self::String(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Self::Float32(_) => DType::Float32,
            Self::Int64(_) => DType::Int64,
            Self::String(_) => DType::String,
        }
    }
}

/// A named tensor going into or coming out of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    #[serde(flatten)]
    pub data: TensorData,
}

/// A model input or output as declared by the ONNX graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoSpec {
    pub name: String,
    pub dtype: DType,
    /// `None` for a dynamic dimension (usually the batch).
    pub shape: Vec<Option<usize>>,
}

/// What the node knows about a stored model. Derived from the ONNX file at upload, except the
/// output decimals, which the uploader chooses.
///
/// On the RPC (and in the store) its fields are camelCase like every other pipe_ field
/// (`sizeBytes`, `costUnits`); the snake_case spellings of earlier releases are still read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelMeta {
    pub id: ModelId,
    /// A label for humans (the uploaded file's name); not part of the id.
    pub name: String,
    #[serde(alias = "size_bytes")]
    pub size_bytes: u64,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    /// Decimals of every float output turned into a `Number`.
    pub decimals: u32,
    /// Cost units the precompile charges gas for (times the inference gas price).
    #[serde(alias = "cost_units")]
    pub cost_units: u64,
    /// The ONNX operators the graph uses, `domain:op_type`, sorted.
    pub operators: Vec<String>,
    /// What runs the file: an ONNX graph (`runModelInference`) or a language model
    /// (`runLLMCompletion`, `runLLMChat`). Rows stored before language models existed are ONNX.
    #[serde(default)]
    pub kind: ModelKind,
    /// A language model's terms; `None` for ONNX models. For a language model `cost_units`
    /// is per token (prompt and answer alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSpec>,
}

/// What runs a stored model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// An ONNX graph, run by tract.
    #[default]
    Onnx,
    /// A GGUF language model.
    Llm,
}

impl ModelKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Onnx => "onnx",
            Self::Llm => "llm",
        }
    }
}

/// Language models a node or worker keeps loaded (each holds its weights, hundreds of MB for
/// real ones; loading one takes seconds): the node's store and a worker evict the least
/// recently used beyond this many, and the dispatcher, taking a worker to hold the last this
/// many it ran, sends a request for one of them back there.
pub const LOADED_LLMS: usize = 2;

/// What the chain knows about a language model: read from its GGUF file at upload, so every
/// node validates a request against the same limits without loading the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmSpec {
    /// `general.architecture` (`llama`, `qwen2`, `phi3`).
    pub architecture: String,
    /// Most tokens, prompt and answer together, one run may hold.
    pub context_length: u32,
    /// The largest `max_tokens` a request may ask for.
    pub max_tokens: u32,
    /// Weights in the file (elements, whatever their quantization).
    pub parameters: u64,
}

/// Verification mode of a request, as the `ModelInferenceMode` enum encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InferenceMode {
    Vanilla = 0,
    Zkml = 1,
    Tee = 2,
}

impl InferenceMode {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Vanilla),
            1 => Some(Self::Zkml),
            2 => Some(Self::Tee),
            _ => None,
        }
    }
}

/// Smallest accepted input decimals (negative decimals scale up: `(5, -3)` is 5000).
pub const MIN_INPUT_DECIMALS: i128 = -38;
/// Largest accepted input decimals.
pub const MAX_INPUT_DECIMALS: i128 = 38;
/// Largest decimals a model may declare for its outputs.
pub const MAX_OUTPUT_DECIMALS: u32 = 18;
/// Decimals used when the uploader does not choose.
pub const DEFAULT_OUTPUT_DECIMALS: u32 = 8;

/// `10^n` as an exact f64 for n ≤ 22, and the correctly rounded literal above.
fn pow10(n: u32) -> f64 {
    const TABLE: [f64; 39] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28, 1e29, 1e30, 1e31,
        1e32, 1e33, 1e34, 1e35, 1e36, 1e37, 1e38,
    ];
    TABLE[n as usize]
}

/// Why a Number cannot be converted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NumberError {
    #[error("decimals {0} out of range [-38, 38]")]
    InputDecimals(i128),
    #[error("output decimals {0} above {MAX_OUTPUT_DECIMALS}")]
    OutputDecimals(u32),
    #[error("model output is not a finite number")]
    NotFinite,
    #[error("model output {0} does not fit an int128 at {1} decimals")]
    OutOfRange(f32, u32),
}

/// `value × 10^-decimals` as f32, by the rule in the module docs.
pub fn number_to_f32(value: i128, decimals: i128) -> Result<f32, NumberError> {
    if !(MIN_INPUT_DECIMALS..=MAX_INPUT_DECIMALS).contains(&decimals) {
        return Err(NumberError::InputDecimals(decimals));
    }
    let v = value as f64;
    let x = if decimals >= 0 {
        v / pow10(decimals as u32)
    } else {
        v * pow10(decimals.unsigned_abs() as u32)
    };
    Ok(x as f32)
}

/// A float output as the `Number` value at `decimals`, by the rule in the module docs.
pub fn f32_to_number(x: f32, decimals: u32) -> Result<i128, NumberError> {
    if decimals > MAX_OUTPUT_DECIMALS {
        return Err(NumberError::OutputDecimals(decimals));
    }
    if !x.is_finite() {
        return Err(NumberError::NotFinite);
    }
    let scaled = (x as f64 * pow10(decimals)).round_ties_even();
    // 2^127 is exactly representable; anything at or beyond it does not fit.
    const LIMIT: f64 = 170141183460469231731687303715884105728.0;
    if !(-LIMIT..LIMIT).contains(&scaled) {
        return Err(NumberError::OutOfRange(x, decimals));
    }
    Ok(scaled as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metadata is written camelCase; rows an earlier release stored snake_case still read.
    #[test]
    fn model_meta_is_camel_case_and_reads_the_old_spelling() {
        let meta = ModelMeta {
            id: ModelId::of(b"m"),
            name: "m".into(),
            size_bytes: 1,
            inputs: vec![],
            outputs: vec![],
            decimals: 8,
            cost_units: 7,
            operators: vec![],
            kind: ModelKind::Onnx,
            llm: None,
        };
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(json["costUnits"], 7);
        assert_eq!(json["sizeBytes"], 1);
        let old = serde_json::json!({
            "id": meta.id, "name": "m", "size_bytes": 1, "inputs": [], "outputs": [],
            "decimals": 8, "cost_units": 7, "operators": []
        });
        assert_eq!(serde_json::from_value::<ModelMeta>(old).unwrap(), meta);
    }

    #[test]
    fn model_id_round_trips_and_matches_ipfs() {
        // `printf hello | ipfs add --cid-version 1 --raw-leaves -q`
        let id = ModelId::of(b"hello");
        assert_eq!(
            id.to_string(),
            "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"
        );
        assert_eq!(id.to_string().parse::<ModelId>().unwrap(), id);
    }

    #[test]
    fn model_id_rejects_junk() {
        let good = ModelId::of(b"x").to_string();
        for bad in [
            "",
            "Qm",
            &good[1..],
            &good.to_uppercase(),
            &format!("{good}a"),
            "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4ye1",
            // raw codec swapped for dag-pb (0x70): a valid CID, but not a raw-bytes one.
            "bafybeibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq",
        ] {
            assert!(bad.parse::<ModelId>().is_err(), "{bad:?} accepted");
        }
        // Last character carries two spare bits; a non-zero spare bit is non-canonical.
        let mut chars: Vec<char> = good.chars().collect();
        let last = chars.pop().unwrap();
        let alphabet = "abcdefghijklmnopqrstuvwxyz234567";
        let pos = alphabet.find(last).unwrap();
        if pos.is_multiple_of(4) {
            chars.push(alphabet.chars().nth(pos + 1).unwrap());
            let tweaked: String = chars.into_iter().collect();
            assert!(tweaked.parse::<ModelId>().is_err());
        }
    }

    #[test]
    fn numbers_in() {
        assert_eq!(number_to_f32(15, 1).unwrap(), 1.5);
        assert_eq!(number_to_f32(-25, 2).unwrap(), -0.25);
        assert_eq!(number_to_f32(5, -3).unwrap(), 5000.0);
        assert_eq!(number_to_f32(i128::MAX, 38).unwrap(), 1.7014118);
        assert_eq!(number_to_f32(1, 39), Err(NumberError::InputDecimals(39)));
        assert_eq!(number_to_f32(1, -39), Err(NumberError::InputDecimals(-39)));
        assert_eq!(
            number_to_f32(1, i128::MIN),
            Err(NumberError::InputDecimals(i128::MIN))
        );
        // 0.1 is not a float; the rule picks the nearest f32 of the f64 quotient.
        assert_eq!(number_to_f32(1, 1).unwrap(), 0.1f32);
    }

    #[test]
    fn numbers_out() {
        assert_eq!(f32_to_number(1.5, 1).unwrap(), 15);
        assert_eq!(f32_to_number(0.25, 1).unwrap(), 2); // ties to even
        assert_eq!(f32_to_number(0.75, 1).unwrap(), 8);
        assert_eq!(f32_to_number(-0.25, 1).unwrap(), -2);
        // f32 0.1 is 0.100000001490116…; at 8 decimals that rounds to 10000000.
        assert_eq!(f32_to_number(0.1, 8).unwrap(), 10_000_000);
        assert_eq!(f32_to_number(f32::NAN, 2), Err(NumberError::NotFinite));
        assert_eq!(f32_to_number(f32::INFINITY, 2), Err(NumberError::NotFinite));
        assert!(matches!(
            f32_to_number(f32::MAX, 18),
            Err(NumberError::OutOfRange(..))
        ));
        assert_eq!(f32_to_number(1.0, 19), Err(NumberError::OutputDecimals(19)));
        assert!(f32_to_number(-1e20, 18).unwrap() < -99_999_999_999_999_999_999 * 10i128.pow(18));
    }
}
