// SPDX-License-Identifier: MIT
pragma solidity ^0.8.18;

import "./PipeInference.sol";

/// @title PipeTensors — small helpers for building model requests and reading outputs.
/// @notice pipe's own additions on top of the OpenGradient-compatible `PipeInference.sol`.
///         All functions are `internal`, so they are inlined: no library deployment or linking.
library PipeTensors {
    /// @notice Largest number of decimals `toScale` accepts.
    uint8 internal constant MAX_DECIMALS = 38;

    // ------------------------------------------------------------------ building inputs

    /// @notice A decimal number `value * 10^-decimals`.
    /// @dev `num(15, 1)` is 1.5; `num(1234, 4)` is 0.1234 (1234 bps).
    /// @param value The unscaled integer value.
    /// @param decimals How many decimal places `value` carries.
    function num(int128 value, int128 decimals) internal pure returns (TensorLib.Number memory) {
        return TensorLib.Number(value, decimals);
    }

    /// @notice A tensor of shape [1, n] holding one row of features (a batch of one).
    /// @dev Most models take a leading batch dimension, so a single sample is shape [1, n].
    /// @param name The model's input name (e.g. "input").
    /// @param values The n feature values.
    function row(string memory name, TensorLib.Number[] memory values)
        internal
        pure
        returns (TensorLib.MultiDimensionalNumberTensor memory)
    {
        require(values.length <= type(uint32).max, "row too long");
        uint32[] memory shape = new uint32[](2);
        shape[0] = 1;
        shape[1] = uint32(values.length);
        return TensorLib.MultiDimensionalNumberTensor(name, values, shape);
    }

    /// @notice A `ModelInput` holding exactly one number tensor and no string tensors.
    /// @param tensor The model's only input.
    function input(TensorLib.MultiDimensionalNumberTensor memory tensor)
        internal
        pure
        returns (ModelInput memory in_)
    {
        in_.numbers = new TensorLib.MultiDimensionalNumberTensor[](1);
        in_.numbers[0] = tensor;
        in_.strings = new TensorLib.StringTensor[](0);
    }

    /// @notice Alias of `input`: a `ModelInput` with a single number tensor.
    /// @param tensor The model's only input.
    function single(TensorLib.MultiDimensionalNumberTensor memory tensor)
        internal
        pure
        returns (ModelInput memory)
    {
        return input(tensor);
    }

    /// @notice A VANILLA-mode request for model `modelCID` on `in_`.
    /// @param modelCID The model id (content hash of its ONNX file).
    /// @param in_ The model input.
    function request(string memory modelCID, ModelInput memory in_)
        internal
        pure
        returns (ModelInferenceRequest memory)
    {
        return ModelInferenceRequest(ModelInferenceMode.VANILLA, modelCID, in_);
    }

    // ------------------------------------------------------------------ calling the precompile

    /// @notice Run `req` on the inference precompile and return the decoded output.
    ///         Same effect as `OG_INFERENCE_CONTRACT.runModelInference(req)`; a revert of the
    ///         precompile is bubbled up unchanged.
    /// @dev Why not the one-liner: solc's legacy code generator with the optimizer on (the
    ///      settings of tools/js/compile.js) fails with "Stack too deep" (`headStart`) while
    ///      generating the ABI decoder for a `ModelOutput` held in memory (return data).
    ///      With `viaIR: true` (or the optimizer off) the one-liner compiles and behaves the same.
    ///      This helper does a low-level call and decodes the output piecewise with `decodeOutput`.
    /// @param req The request (see `request`).
    function run(ModelInferenceRequest memory req) internal returns (ModelOutput memory) {
        (bool ok, bytes memory ret) = OG_INFERENCE_ADDRESS.call(abi.encodeCall(OGInference.runModelInference, (req)));
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
        return decodeOutput(ret);
    }

    /// @notice Decode `abi.encode(ModelOutput)` (the precompile's return data).
    /// @dev Decodes each field on its own (a workaround for the solc "Stack too deep" in the
    ///      all-in-one decoder, see `run`); reverts on malformed data like `abi.decode` does.
    /// @param data ABI-encoded `ModelOutput` (a one-element tuple).
    function decodeOutput(bytes memory data) internal pure returns (ModelOutput memory out) {
        // data: [offset of struct] ... struct: [off numbers][off strings][off jsons][is_simulation_result] ...
        // Field offsets are relative to the start of the struct.
        uint256 base = abi.decode(data, (uint256));
        (uint256 offN, uint256 offS, uint256 offJ, bool sim) =
            abi.decode(_slice(data, base, false), (uint256, uint256, uint256, bool));
        require(offN <= data.length && offS <= data.length && offJ <= data.length, "bad output encoding");
        out.numbers = abi.decode(_slice(data, base + offN, true), (TensorLib.MultiDimensionalNumberTensor[]));
        out.strings = abi.decode(_slice(data, base + offS, true), (TensorLib.StringTensor[]));
        out.jsons = abi.decode(_slice(data, base + offJ, true), (TensorLib.JsonScalar[]));
        out.is_simulation_result = sim;
    }

    /// @dev Copy of `data[start:]`, optionally prefixed with the word 0x20 so that the copy
    ///      decodes as a one-element tuple whose dynamic element starts at `start`.
    function _slice(bytes memory data, uint256 start, bool prefixOffset) private pure returns (bytes memory v) {
        require(start <= data.length, "bad output encoding");
        uint256 hdr = prefixOffset ? 32 : 0;
        assembly ("memory-safe") {
            let len := sub(mload(data), start)
            v := mload(0x40)
            mstore(v, add(len, hdr))
            if hdr { mstore(add(v, 32), 32) }
            let src := add(add(data, 32), start)
            let dst := add(add(v, 32), hdr)
            for { let i := 0 } lt(i, len) { i := add(i, 32) } {
                mstore(add(dst, i), mload(add(src, i)))
            }
            mstore(0x40, add(dst, and(add(len, 31), not(31))))
        }
    }

    // ------------------------------------------------------------------ reading outputs

    /// @notice Rescale `n` to an integer with exactly `decimals` decimal places,
    ///         rounding toward zero. E.g. toScale(Number(123456, 5), 2) == 123 (1.23456 -> 1.23).
    /// @dev Reverts with "toScale: decimals > 38" if `decimals` > 38 and with
    ///      "toScale: overflow" if the result does not fit in int256.
    ///      Negative `n.decimals` are allowed (Number(5, -2) is 500).
    /// @param n The number to rescale.
    /// @param decimals Target number of decimal places (0..38).
    /// @return The integer `n * 10^decimals`, truncated toward zero.
    function toScale(TensorLib.Number memory n, uint8 decimals) internal pure returns (int256) {
        require(decimals <= MAX_DECIMALS, "toScale: decimals > 38");
        int256 v = int256(n.value);
        if (v == 0) return 0;
        int256 shift = int256(uint256(decimals)) - int256(n.decimals);
        if (shift >= 0) {
            // 10^76 is the largest power of ten that fits in int256.
            require(shift <= 76, "toScale: overflow");
            int256 f = int256(10 ** uint256(shift));
            require(v <= type(int256).max / f && v >= type(int256).min / f, "toScale: overflow");
            return v * f;
        }
        // |v| < 2^127 < 10^39, so dividing by 10^39 or more always gives 0.
        if (shift < -38) return 0;
        return v / int256(10 ** uint256(-shift)); // Solidity division truncates toward zero
    }

    /// @notice The number output named `name`.
    /// @dev Reverts with "output not found: <name>" if the model has no such number output.
    /// @param out The model output.
    /// @param name The output name as declared by the ONNX model (e.g. "probabilities").
    function findNumbers(ModelOutput memory out, string memory name)
        internal
        pure
        returns (TensorLib.MultiDimensionalNumberTensor memory)
    {
        bytes32 want = keccak256(bytes(name));
        for (uint256 i = 0; i < out.numbers.length; i++) {
            if (keccak256(bytes(out.numbers[i].name)) == want) return out.numbers[i];
        }
        revert(string.concat("output not found: ", name));
    }

    /// @notice The first element (flat index 0) of `tensor`.
    /// @dev Reverts with "empty tensor" if `tensor` has no values.
    /// @param tensor The tensor to read.
    function first(TensorLib.MultiDimensionalNumberTensor memory tensor)
        internal
        pure
        returns (TensorLib.Number memory)
    {
        require(tensor.values.length > 0, "empty tensor");
        return tensor.values[0];
    }

    /// @notice Element `i` of `tensor`'s flattened (row-major) values.
    /// @dev Reverts with "index out of bounds" if `i` >= number of values.
    /// @param tensor The tensor to read.
    /// @param i The flat index.
    function at(TensorLib.MultiDimensionalNumberTensor memory tensor, uint256 i)
        internal
        pure
        returns (TensorLib.Number memory)
    {
        require(i < tensor.values.length, "index out of bounds");
        return tensor.values[i];
    }
}
