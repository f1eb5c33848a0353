// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "../PipeInference.sol";
import "../PipeTensors.sol";

/// @title ClassifierGate — admits accounts according to an ONNX classifier.
/// @notice Model `rf_classifier` (random forest):
///           input  "input"         shape [1,3]: account_age_years, tx_count / 100, failed_ratio (0..1)
///           output "label"         shape [1]:   0 = allow, 1 = review, 2 = deny
///           output "probabilities" shape [1,3]: per-class probabilities
///         Feature units: age in thousandths of a year (Number(x, 3)), tx count as-is
///         (tx_count / 100 = Number(tx_count, 2)), failed ratio in thousandths (Number(x, 3)).
contract ClassifierGate {
    using PipeTensors for ModelOutput;
    using PipeTensors for TensorLib.MultiDimensionalNumberTensor;
    using PipeTensors for TensorLib.Number;

    int256 public constant ALLOW = 0;
    int256 public constant REVIEW = 1;
    int256 public constant DENY = 2;

    /// @notice Model id (content hash of the classifier's ONNX file).
    string public modelCID;

    /// @notice Class assigned to each account that entered.
    mapping(address => int256) public classOf;
    /// @notice Number of successful `enter` calls.
    uint256 public admitted;
    /// @notice Label of the last successful `enter`.
    int256 public lastLabel;

    event Classified(address who, int256 label);
    event ClassQuoted(address caller, int256 label);

    constructor(string memory modelCID_) {
        modelCID = modelCID_;
    }

    /// @notice Classify the caller and let them in unless the model says "deny".
    function enter(int128 ageMilli, int128 txCountCenti, int128 failedRatioMilli) external {
        int256 label = _classify(ageMilli, txCountCenti, failedRatioMilli);
        require(label != DENY, "denied by model");

        classOf[msg.sender] = label;
        lastLabel = label;
        emit Classified(msg.sender, label);
        if (label == ALLOW || label == REVIEW) admitted++;
    }

    /// @notice Classify arbitrary features (use with `cast call`).
    /// @dev Not `view`: it calls the precompile.
    function classify(int128 ageMilli, int128 txCountCenti, int128 failedRatioMilli) external returns (int256 label) {
        label = _classify(ageMilli, txCountCenti, failedRatioMilli);
        emit ClassQuoted(msg.sender, label);
    }

    function _classify(int128 ageMilli, int128 txCountCenti, int128 failedRatioMilli) internal returns (int256) {
        TensorLib.Number[] memory f = new TensorLib.Number[](3);
        f[0] = PipeTensors.num(ageMilli, 3);
        f[1] = PipeTensors.num(txCountCenti, 2);
        f[2] = PipeTensors.num(failedRatioMilli, 3);

        // Calls the precompile at 0x...F4 (= OG_INFERENCE_CONTRACT.runModelInference; see PipeTensors.run).
        ModelOutput memory out = PipeTensors.run(
            PipeTensors.request(modelCID, PipeTensors.input(PipeTensors.row("input", f)))
        );
        return out.findNumbers("label").first().toScale(0);
    }
}
