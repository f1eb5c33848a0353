// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "../PipeInference.sol";
import "../PipeTensors.sol";

/// @title StoredFeatureScore — a model scored on features kept in storage.
/// @notice A keeper writes three features (`setFeatures`, hundredths); anyone calls `score`,
///         which feeds the stored features to a regression model (`linreg`) and records the
///         score. The inference input depends on state, so a `setFeatures` landing before a
///         pending `score` changes the request: under PIPE that `score` is re-simulated and
///         runs with the result for the new features, never the old one.
contract StoredFeatureScore {
    using PipeTensors for ModelOutput;
    using PipeTensors for TensorLib.MultiDimensionalNumberTensor;
    using PipeTensors for TensorLib.Number;

    string public model;
    /// @notice The features, in hundredths (1.25 = 125).
    int128[3] public features;
    /// @notice The last score, in ten-thousandths.
    int256 public lastScore;

    event Scored(int128 feature0, int256 score);

    constructor(string memory model_) {
        model = model_;
    }

    function setFeatures(int128 a, int128 b, int128 c) external {
        features = [a, b, c];
    }

    function score() external returns (int256 s) {
        TensorLib.Number[] memory x = new TensorLib.Number[](3);
        for (uint256 i = 0; i < 3; i++) {
            x[i] = PipeTensors.num(features[i], 2);
        }
        // Calls the precompile at 0x...F4 (= OG_INFERENCE_CONTRACT.runModelInference; see PipeTensors.run).
        ModelOutput memory out =
            PipeTensors.run(PipeTensors.request(model, PipeTensors.input(PipeTensors.row("input", x))));
        s = out.findNumbers("variable").first().toScale(4);
        lastScore = s;
        emit Scored(features[0], s);
    }
}
