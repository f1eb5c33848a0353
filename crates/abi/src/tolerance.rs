//! When two results for one request agree: the check a validator makes on a leader's VANILLA
//! results before it votes.
//!
//! tract is not bit-exact across instruction sets (it picks kernels by CPU: the order of a
//! sum changes its last bits), so two honest nodes can round one output to different values
//! at the model's declared decimals when the true value sits near a rounding boundary. They
//! never differ by more than one unit in that last place. So:
//! - the status (output or failure) must be equal, and a failure's reason too (failures are
//!   decided by checks, not by arithmetic);
//! - outputs must have the same tensors: names, shapes, decimals, strings and JSON values
//!   equal, and every number within **one unit in its last decimal place** of the other's.
//!
//! Replay never uses this: it executes with the committed bytes, which is what makes it
//! bit-exact on every CPU. This only decides whether the committed bytes are the model's.

use alloy_sol_types::SolCall;
use pipe_primitives::InferenceResult;

use crate::{ModelOutput, runModelInferenceCall};

/// How far apart two fixed-point values at the same decimals may be: one unit in the last
/// place.
pub const TOLERANCE_UNITS: u128 = 1;

/// `Ok` when `committed` agrees with `local` (this node's own result for the same request) by
/// the rule above; otherwise why not.
pub fn results_agree(committed: &InferenceResult, local: &InferenceResult) -> Result<(), String> {
    if committed.key != local.key {
        return Err(format!(
            "results are for different requests ({} and {})",
            committed.key, local.key
        ));
    }
    if committed.status != local.status {
        return Err(match local.as_result() {
            Ok(_) => "committed a failure where the model gives an output".into(),
            Err(reason) => format!("committed an output where the model fails: {reason}"),
        });
    }
    if committed.status == InferenceResult::FAILURE {
        return if committed.payload == local.payload {
            Ok(())
        } else {
            Err("committed a different failure reason".into())
        };
    }
    if committed.payload == local.payload {
        return Ok(());
    }
    let decode = |bytes: &[u8]| {
        runModelInferenceCall::abi_decode_returns_validate(bytes)
            .map_err(|e| format!("undecodable output: {e}"))
    };
    outputs_agree(&decode(&committed.payload)?, &decode(&local.payload)?)
}

/// Two decoded outputs by the rule above.
pub fn outputs_agree(committed: &ModelOutput, local: &ModelOutput) -> Result<(), String> {
    if committed.strings != local.strings
        || committed.jsons != local.jsons
        || committed.is_simulation_result != local.is_simulation_result
    {
        return Err("string or JSON outputs differ".into());
    }
    if committed.numbers.len() != local.numbers.len() {
        return Err("a different number of output tensors".into());
    }
    for (c, l) in committed.numbers.iter().zip(&local.numbers) {
        if c.name != l.name || c.shape != l.shape || c.values.len() != l.values.len() {
            return Err(format!("output `{}` differs in name or shape", c.name));
        }
        for (i, (a, b)) in c.values.iter().zip(&l.values).enumerate() {
            if a.decimals != b.decimals {
                return Err(format!("output `{}`[{i}] differs in decimals", c.name));
            }
            if a.value.abs_diff(b.value) > TOLERANCE_UNITS {
                return Err(format!(
                    "output `{}`[{i}] is {} where the model gives {} (×10^-{})",
                    c.name, a.value, b.value, a.decimals
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloy_primitives::B256;

    use super::*;
    use crate::{MultiDimensionalNumberTensor, Number};

    fn output(values: &[i128]) -> InferenceResult {
        let out = ModelOutput {
            numbers: vec![MultiDimensionalNumberTensor {
                name: "y".into(),
                values: values
                    .iter()
                    .map(|&value| Number { value, decimals: 4 })
                    .collect(),
                shape: vec![values.len() as u32],
            }],
            strings: vec![],
            jsons: vec![],
            is_simulation_result: false,
        };
        InferenceResult::output(
            B256::repeat_byte(1),
            runModelInferenceCall::abi_encode_returns(&out).into(),
        )
    }

    #[test]
    fn one_unit_in_the_last_place_agrees_two_do_not() {
        assert!(results_agree(&output(&[12345, -7]), &output(&[12345, -7])).is_ok());
        assert!(results_agree(&output(&[12346, -7]), &output(&[12345, -8])).is_ok());
        let err = results_agree(&output(&[12347, -7]), &output(&[12345, -7])).unwrap_err();
        assert!(err.contains("12347 where the model gives 12345"), "{err}");
        assert!(results_agree(&output(&[1, 2]), &output(&[1])).is_err());
    }

    #[test]
    fn status_and_failure_reasons_must_match() {
        let key = B256::repeat_byte(1);
        let fail = InferenceResult::failure(key, "model error: NaN");
        assert!(results_agree(&fail, &fail.clone()).is_ok());
        assert!(results_agree(&fail, &output(&[1])).is_err());
        assert!(results_agree(&output(&[1]), &fail).is_err());
        assert!(results_agree(&fail, &InferenceResult::failure(key, "other")).is_err());
        let mut other_key = output(&[1]);
        other_key.key = B256::repeat_byte(2);
        assert!(results_agree(&other_key, &output(&[1])).is_err());
    }

    #[test]
    fn garbage_is_disagreement_not_a_panic() {
        let mut junk = output(&[1]);
        junk.payload = vec![0xff; 7].into();
        assert!(results_agree(&junk, &output(&[1])).is_err());
    }
}
