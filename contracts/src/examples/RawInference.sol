// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "../PipeInference.sol";
import "../PipeTensors.sol";

/// @title RawInference — thin pass-through to the inference precompile, for tests.
/// @notice Forwards arbitrary (also malformed) requests and records a hash of what came back.
contract RawInference {
    /// @notice keccak256(abi.encode(output)) of the last successful `infer` call.
    bytes32 public lastOutputHash;
    /// @notice keccak256 of the return data of the last successful `callRaw`.
    bytes32 public lastRawHash;
    /// @notice Whether the two outputs of the last `inferTwiceSame` were identical.
    bool public lastTwiceEqual;

    event Inferred(bytes32 outputHash, uint256 numbers, uint256 strings);
    event RawCalled(bytes32 returnHash, uint256 returnLength);
    event TwiceCompared(bytes32 firstHash, bytes32 secondHash, bool equal);

    /// @notice Run `req` through the precompile; revert if it reverts.
    function infer(ModelInferenceRequest calldata req) external returns (ModelOutput memory out) {
        out = _infer(req);
    }

    /// @notice Run the same request twice in one transaction and compare the outputs.
    function inferTwiceSame(ModelInferenceRequest calldata req) external {
        bytes32 a = keccak256(abi.encode(_infer(req)));
        bytes32 b = keccak256(abi.encode(_infer(req)));
        lastTwiceEqual = a == b;
        emit TwiceCompared(a, b, a == b);
    }

    /// @notice Low-level call to the precompile with arbitrary calldata. Bubbles up a revert
    ///         verbatim, so `ok` is always true when this returns.
    function callRaw(bytes calldata data) external returns (bool ok, bytes memory ret) {
        (ok, ret) = OG_INFERENCE_ADDRESS.call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
        lastRawHash = keccak256(ret);
        emit RawCalled(lastRawHash, ret.length);
    }

    /// @dev Equivalent to `OG_INFERENCE_CONTRACT.runModelInference(req)`, written as a low-level
    ///      call because solc's legacy optimizer cannot build that decoder (see PipeTensors.run).
    ///      The request is re-encoded straight from calldata; a precompile revert is bubbled up.
    function _infer(ModelInferenceRequest calldata req) internal returns (ModelOutput memory out) {
        (bool ok, bytes memory ret) =
            OG_INFERENCE_ADDRESS.call(abi.encodeCall(OGInference.runModelInference, (req)));
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
        out = PipeTensors.decodeOutput(ret);
        bytes32 h = keccak256(abi.encode(out));
        lastOutputHash = h;
        emit Inferred(h, out.numbers.length, out.strings.length);
    }
}
