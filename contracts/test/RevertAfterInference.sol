// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title RevertAfterInference — test contract: runs an inference, then reverts.
/// The inference gas stays paid (the model ran); tests check the receipt's gas covers it.
contract RevertAfterInference {
    /// `call` is the full calldata of runModelInference(request) for the precompile at 0x…F4.
    function run(bytes calldata call) external {
        (bool ok, ) = address(0xF4).call(call);
        require(ok, "inference failed");
        revert("reverted after inference");
    }
}
