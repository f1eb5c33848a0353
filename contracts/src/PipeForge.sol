// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "./PipeInference.sol";
import "./PipeTensors.sol";

/// @dev The few Foundry cheatcodes the helper uses (no forge-std needed).
interface PipeForgeVm {
    function ffi(string[] calldata command) external returns (bytes memory);
    function mockCall(address callee, bytes calldata data, bytes calldata returnData) external;
    function etch(address target, bytes calldata code) external;
    function envOr(string calldata name, string calldata defaultValue) external view returns (string memory);
    function toString(bytes calldata value) external pure returns (string memory);
}

/**
 * @title PipeForge — real model outputs at 0x…F4 in `forge test`.
 *
 * Forge's EVM has no inference precompile, so a contract that calls a model reverts there.
 * Inherit this in a test and call `pipeMock(request)` before the code under test makes that
 * request: it runs `pipe infer` through `vm.ffi` (the model on this machine, answered exactly
 * as the precompile answers in a block) and makes 0x…F4 return that output for that request
 * (`vm.mockCall`). It also returns the output, for the test's own checks.
 *
 * Run with `forge test --ffi`. The `pipe` binary is found on PATH, or at `$PIPE_BIN`. The dev
 * chain's example models are known by their ids (`pipe model list`, or offline
 * `pipe model id fixtures/models/<name>.onnx`); give others with `$PIPE_INFER_MODEL` (a path
 * to an .onnx file). A request the precompile would refuse, or that the model fails on, makes
 * `pipe infer` fail, and with it the test (its stderr says why).
 *
 * The mock matches the request's exact calldata: the test must build the same request as the
 * contract (same model, tensor names, values and decimals, shape).
 */
abstract contract PipeForge {
    PipeForgeVm internal constant PIPE_VM = PipeForgeVm(address(uint160(uint256(keccak256("hevm cheat code")))));

    /// @notice Makes 0x…F4 answer `request` with the model's real output; returns the output.
    function pipeMock(ModelInferenceRequest memory request) internal returns (ModelOutput memory) {
        bytes memory data = abi.encodeCall(OGInference.runModelInference, (request));
        bytes memory answer = pipeInfer(data);
        // Code at 0xF4, so calls that check for code (low-level helpers, try/catch) reach the mock.
        PIPE_VM.etch(OG_INFERENCE_ADDRESS, hex"00");
        PIPE_VM.mockCall(OG_INFERENCE_ADDRESS, data, answer);
        return PipeTensors.decodeOutput(answer);
    }

    /// @notice The precompile's ABI-encoded answer to `data` (runModelInference calldata).
    function pipeInfer(bytes memory data) internal returns (bytes memory) {
        string memory model = PIPE_VM.envOr("PIPE_INFER_MODEL", string(""));
        string[] memory command = new string[](bytes(model).length == 0 ? 3 : 5);
        command[0] = PIPE_VM.envOr("PIPE_BIN", string("pipe"));
        command[1] = "infer";
        command[2] = PIPE_VM.toString(data);
        if (bytes(model).length != 0) {
            command[3] = "--model";
            command[4] = model;
        }
        return PIPE_VM.ffi(command);
    }
}
