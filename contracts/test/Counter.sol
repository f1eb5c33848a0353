// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Counter — test contract for the pipe dev chain.
contract Counter {
    uint256 public counter;

    event Incremented(address indexed by, uint256 newValue);
    event ValueSet(address indexed by, uint256 newValue);

    error CounterError(uint256 code, string reason);

    function increment() external {
        counter += 1;
        emit Incremented(msg.sender, counter);
    }

    function set(uint256 value) external {
        counter = value;
        emit ValueSet(msg.sender, value);
    }

    function get() external view returns (uint256) {
        return counter;
    }

    /// Reverts with Error(string) "counter: forced failure".
    function fail() external pure {
        require(false, "counter: forced failure");
    }

    /// Reverts with the custom error CounterError(42, "custom").
    function failCustom() external pure {
        revert CounterError(42, "custom");
    }
}
