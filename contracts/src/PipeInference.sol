// SPDX-License-Identifier: MIT
pragma solidity ^0.8.18;

/*
 * pipe's ONNX inference precompile — Solidity interface.
 *
 * Source-compatible with OpenGradient's `OGInference.sol`: a contract written against
 * OpenGradient's library compiles unchanged against this file (same file-level names,
 * same struct layouts, same function and event signatures, hence the same ABI).
 *
 * The precompile lives at 0x...F4. It has no code, which is fine for the high-level call
 * `OG_INFERENCE_CONTRACT.runModelInference(...)`: since both functions return data, solc
 * does not insert an `extcodesize` check before the call.
 *
 * The language-model functions (`runLLMCompletion`, `runLLMChat`, their structs and events)
 * are declared as OpenGradient's file declares them, so their selectors and event topics are
 * theirs; pipe runs them on GGUF models it stores (docs/llm.md).
 *
 * Differences in behaviour on pipe (not in the interface):
 *   - `modelCID` is the content hash of the ONNX or GGUF file registered with the node.
 *   - `mode` VANILLA and TEE run the model; ZK reverts ("ZKML mode is not supported").
 *   - Failures revert with a readable reason; outputs are never simulation placeholders.
 */

/// @dev Address of the inference precompile.
address constant OG_INFERENCE_ADDRESS = 0x00000000000000000000000000000000000000F4;

/// @dev The precompile, typed as the `OGInference` interface.
OGInference constant OG_INFERENCE_CONTRACT = OGInference(OG_INFERENCE_ADDRESS);

// ---------------------------------------------------------------------------------------
// Language models (OpenGradient's declarations, January 2025)
// ---------------------------------------------------------------------------------------

/// @notice Execution mode of an LLM request (ABI: uint8 0 / 1).
enum LLMInferenceMode {
    VANILLA,
    TEE
}

/// @notice A completion: `prompt` continued by model `modelCID`.
struct LLMCompletionRequest {
    LLMInferenceMode mode;
    string modelCID;
    string prompt;
    uint32 max_tokens;
    string[] stop_sequence;
    uint32 temperature; // 0..100, hundredths: 70 is 0.7
}

/// @notice The completion's text.
struct LLMCompletionResponse {
    string answer;
}

/// @notice A tool the model may call; `parameters` is a JSON schema, as a string.
struct ToolDefinition {
    string description;
    string name;
    string parameters;
}

/// @notice A call of a tool the model made; `arguments` is JSON.
struct ToolCall {
    string id;
    string name;
    string arguments;
}

/// @notice One message of a chat.
struct ChatMessage {
    string role;
    string content;
    string name;
    string tool_call_id;
    ToolCall[] tool_calls;
}

/// @notice A chat: the messages so far, the tools the model may call.
struct LLMChatRequest {
    LLMInferenceMode mode;
    string modelCID;
    ChatMessage[] messages;
    ToolDefinition[] tools;
    string tool_choice;
    uint32 max_tokens;
    string[] stop_sequence;
    uint32 temperature; // 0..100, hundredths
}

/// @notice The model's next message, and why it stopped ("stop", "length", "tool_calls").
struct LLMChatResponse {
    string finish_reason;
    ChatMessage message;
}

// ---------------------------------------------------------------------------------------
// ML models
// ---------------------------------------------------------------------------------------

/// @notice Execution mode of a model request (ABI: uint8 0 / 1 / 2).
enum ModelInferenceMode {
    VANILLA,
    ZK,
    TEE
}

/// @notice A request to run model `modelCID` on `input`.
struct ModelInferenceRequest {
    ModelInferenceMode mode;
    string modelCID;
    ModelInput input;
}

/// @notice Model inputs: named number tensors and named string tensors.
struct ModelInput {
    TensorLib.MultiDimensionalNumberTensor[] numbers;
    TensorLib.StringTensor[] strings;
}

/// @notice Model outputs, in the order the model declares them, split by kind:
///         `numbers[i]` is the i-th numeric output, `strings[j]` the j-th string output.
///         Look outputs up by name (see `PipeTensors.findNumbers`) rather than by index.
struct ModelOutput {
    TensorLib.MultiDimensionalNumberTensor[] numbers;
    TensorLib.StringTensor[] strings;
    TensorLib.JsonScalar[] jsons;
    bool is_simulation_result;
}

// ---------------------------------------------------------------------------------------
// Precompile interface
// ---------------------------------------------------------------------------------------

interface OGInference {
    /// @notice Logged for each model inference.
    event ModelInferenceEvent(string inferenceID, ModelInferenceRequest request, ModelOutput response);

    /// @notice Logged for each completion.
    event LLMCompletionEvent(string inferenceID, LLMCompletionRequest request, LLMCompletionResponse response);

    /// @notice Logged for each chat turn (OpenGradient's name for it).
    event LLMChat(string inferenceID, LLMChatRequest request, LLMChatResponse response);

    /// @notice Run an ONNX model. Reverts if the model is unknown or the input is invalid.
    function runModelInference(ModelInferenceRequest memory request) external returns (ModelOutput memory);

    /// @notice Complete a prompt with a language model.
    function runLLMCompletion(LLMCompletionRequest memory request) external returns (LLMCompletionResponse memory);

    /// @notice The next message of a chat with a language model.
    function runLLMChat(LLMChatRequest memory request) external returns (LLMChatResponse memory);
}

// ---------------------------------------------------------------------------------------
// Tensors
// ---------------------------------------------------------------------------------------

library TensorLib {
    /// @notice A decimal number: `value * 10^-decimals`. 10 is Number(10, 0), 1.5 is Number(15, 1).
    struct Number {
        int128 value;
        int128 decimals;
    }

    /// @notice A named number tensor; `values` are flattened in row-major order, `shape`
    ///         holds the size of each dimension.
    struct MultiDimensionalNumberTensor {
        string name;
        Number[] values;
        uint32[] shape;
    }

    /// @notice A named one-dimensional tensor of strings.
    struct StringTensor {
        string name;
        string[] values;
    }

    /// @notice A named scalar serialised as JSON text.
    struct JsonScalar {
        string name;
        string value;
    }

    /// @notice A 1-D tensor of shape [values.length].
    function numberTensor1D(string memory name, Number[] memory values)
        internal
        pure
        returns (MultiDimensionalNumberTensor memory tensor)
    {
        uint32[] memory shape = new uint32[](1);
        shape[0] = _toU32(values.length);
        tensor = MultiDimensionalNumberTensor(name, values, shape);
    }

    /// @notice A 2-D tensor of shape [rows, cols] from a rectangular, non-empty array of rows.
    function numberTensor2D(string memory name, Number[][] memory values)
        internal
        pure
        returns (MultiDimensionalNumberTensor memory tensor)
    {
        uint256 rows = values.length;
        require(rows > 0 && values[0].length > 0, "Input array must be non-empty");
        uint256 cols = values[0].length;

        Number[] memory flat = new Number[](rows * cols);
        uint256 k;
        for (uint256 r = 0; r < rows; r++) {
            Number[] memory line = values[r];
            require(line.length == cols, "All rows must have the same length");
            for (uint256 c = 0; c < cols; c++) {
                flat[k++] = line[c];
            }
        }

        uint32[] memory shape = new uint32[](2);
        shape[0] = _toU32(rows);
        shape[1] = _toU32(cols);
        tensor = MultiDimensionalNumberTensor(name, flat, shape);
    }

    /// @notice A zero-filled tensor with the given (non-empty, positive) dimensions.
    function numberTensorND(string memory name, uint32[] memory dimensions)
        internal
        pure
        returns (MultiDimensionalNumberTensor memory tensor)
    {
        require(dimensions.length > 0, "Dimensions array must not be empty");
        uint256 size = 1;
        for (uint256 i = 0; i < dimensions.length; i++) {
            require(dimensions[i] > 0, "All dimensions must be positive");
            size *= dimensions[i];
        }
        tensor = MultiDimensionalNumberTensor(name, new Number[](size), dimensions);
    }

    /// @notice Set element `pos` of a 1-D tensor.
    function setValue(MultiDimensionalNumberTensor memory self, uint32 pos, Number memory value) internal pure {
        require(self.shape.length == 1, "This function is for 1D tensors only");
        uint32[] memory idx = new uint32[](1);
        idx[0] = pos;
        setValue(self, idx, value);
    }

    /// @notice Set element [row, col] of a 2-D tensor.
    function setValue(MultiDimensionalNumberTensor memory self, uint32 row, uint32 col, Number memory value)
        internal
        pure
    {
        require(self.shape.length == 2, "This function is for 2D tensors only");
        uint32[] memory idx = new uint32[](2);
        idx[0] = row;
        idx[1] = col;
        setValue(self, idx, value);
    }

    /// @notice Set element [dim1, dim2, dim3] of a 3-D tensor.
    function setValue(
        MultiDimensionalNumberTensor memory self,
        uint32 dim1,
        uint32 dim2,
        uint32 dim3,
        Number memory value
    ) internal pure {
        require(self.shape.length == 3, "This function is for 3D tensors only");
        uint32[] memory idx = new uint32[](3);
        idx[0] = dim1;
        idx[1] = dim2;
        idx[2] = dim3;
        setValue(self, idx, value);
    }

    /// @notice Set the element at `indices` (one index per dimension).
    function setValue(MultiDimensionalNumberTensor memory self, uint32[] memory indices, Number memory value)
        internal
        pure
    {
        self.values[getFlatIndex(self, indices)] = value;
    }

    /// @notice Read the element at `indices` (one index per dimension).
    function getValue(MultiDimensionalNumberTensor memory self, uint32[] memory indices)
        internal
        pure
        returns (Number memory)
    {
        return self.values[getFlatIndex(self, indices)];
    }

    /// @dev Row-major flat position of `indices`; checks rank and bounds.
    function getFlatIndex(MultiDimensionalNumberTensor memory self, uint32[] memory indices)
        private
        pure
        returns (uint256 flat)
    {
        uint32[] memory shape = self.shape;
        require(indices.length == shape.length, "Indices dimension mismatch");
        for (uint256 d = 0; d < shape.length; d++) {
            require(indices[d] < shape[d], "Index out of bounds");
            flat = flat * shape[d] + indices[d];
        }
        require(flat < self.values.length, "Index out of bounds");
    }

    function _toU32(uint256 x) private pure returns (uint32) {
        require(x <= type(uint32).max, "Tensor dimension too large");
        return uint32(x);
    }
}
