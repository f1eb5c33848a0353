// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title ManyInferences — test contract: calls the precompile at 0x…F4 once per entry.
/// `calls[i]` is the full calldata of runModelInference(request). A failed call's revert
/// data is passed on, so the precompile's reason (e.g. the bound on requests per
/// transaction) is the transaction's.
contract ManyInferences {
    uint256 public done;

    function run(bytes[] calldata calls) external {
        for (uint256 i = 0; i < calls.length; i++) {
            (bool ok, bytes memory ret) = address(0xF4).call(calls[i]);
            if (!ok) {
                assembly {
                    revert(add(ret, 32), mload(ret))
                }
            }
        }
        done += calls.length;
    }
}
