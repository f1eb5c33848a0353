// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title InferenceOracle — the two-transaction baseline for the congestion benchmark.
/// @notice Models how inference reaches a chain without pipe's precompile: a contract logs a
/// request, an off-chain relayer runs the model and sends the result back in a second
/// transaction. The benchmark compares this round trip with a single in-transaction call.
/// @dev Deliberately minimal so that its gas cost is the floor of any request/fulfil oracle.
contract InferenceOracle {
    /// The only account allowed to answer; fixed at deployment, so no storage read per call.
    address public immutable relayer;
    /// Id the next request gets; ids are dense, so `id < nextId` means "was requested".
    uint256 public nextId;
    /// Request id => keccak256 of the delivered output (zero while pending). Only the hash is
    /// stored: the output itself is in the event log, which is far cheaper than storage.
    mapping(uint256 => bytes32) public fulfilled;

    event InferenceRequested(uint256 indexed id, address indexed requester, bytes request);
    event InferenceFulfilled(uint256 indexed id, bytes output);

    constructor(address relayer_) {
        require(relayer_ != address(0), "relayer is the zero address");
        relayer = relayer_;
    }

    /// @notice Asks the relayer to run `req`; the relayer watches for `InferenceRequested`.
    function request(bytes calldata req) external returns (uint256 id) {
        id = nextId++;
        emit InferenceRequested(id, msg.sender, req);
    }

    /// @notice Delivers the output for request `id` (second transaction of the round trip).
    function fulfill(uint256 id, bytes calldata output) external {
        require(msg.sender == relayer, "caller is not the relayer");
        require(id < nextId, "unknown request id");
        // keccak256 is never zero in practice (even for empty output), so zero means pending.
        require(fulfilled[id] == bytes32(0), "already fulfilled");
        fulfilled[id] = keccak256(output);
        emit InferenceFulfilled(id, output);
    }
}
