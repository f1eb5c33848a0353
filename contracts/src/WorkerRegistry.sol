// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title WorkerRegistry
/// @notice The inference workers whose signed (TEE mode) results a pipe chain accepts.
/// @dev Lives at 0x00000000000000000000000000000000000000F6 from genesis (0x…F5 is OpenGradient's
/// price-history precompile). Nodes read
/// `registered` straight from storage (slot 1), so the storage layout is part of the protocol:
/// `owner` in slot 0, `registered` in slot 1. A change takes effect from the next block.
/// Registering a key is the owner's statement that it belongs to an enclave running the
/// expected worker; see `pipe_executor::attest` for the trust note.
contract WorkerRegistry {
    /// Slot 0: who may add and remove workers.
    address public owner;
    /// Slot 1: worker signing address => registered.
    mapping(address => bool) public registered;

    event WorkerRegistered(address indexed worker);
    event WorkerRemoved(address indexed worker);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    constructor(address initialOwner) {
        require(initialOwner != address(0), "owner is the zero address");
        owner = initialOwner;
        emit OwnershipTransferred(address(0), initialOwner);
    }

    modifier onlyOwner() {
        require(msg.sender == owner, "not the registry owner");
        _;
    }

    /// @notice Accepts results signed by `worker` from the next block on.
    function register(address worker) external onlyOwner {
        require(worker != address(0), "worker is the zero address");
        require(!registered[worker], "worker already registered");
        registered[worker] = true;
        emit WorkerRegistered(worker);
    }

    /// @notice Stops accepting results signed by `worker` from the next block on.
    function remove(address worker) external onlyOwner {
        require(registered[worker], "worker not registered");
        registered[worker] = false;
        emit WorkerRemoved(worker);
    }

    function transferOwnership(address newOwner) external onlyOwner {
        require(newOwner != address(0), "owner is the zero address");
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }
}
