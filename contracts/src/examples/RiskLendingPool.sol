// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "../PipeInference.sol";
import "../PipeTensors.sol";

/// @title RiskLendingPool — a toy lending pool that liquidates positions an ONNX model scores as risky.
/// @notice Model `risk_logreg` (logistic regression):
///           input  "input"         shape [1,4]: collateral_ratio, debt_utilization (0..1),
///                                               volatility (0..1), days_since_last_payment (0..90)
///           output "label"         shape [1]:   0 = safe, 1 = risky
///           output "probabilities" shape [1,2]: [P(safe), P(risky)]
///         Ratios are passed in basis points (1 bps = 1/10000, so 1.5 = 15000 bps) and sent to
///         the model as Number(bps, 4). Scores are P(risky) in parts per million (1e6 = 100%).
contract RiskLendingPool {
    using PipeTensors for ModelOutput;
    using PipeTensors for TensorLib.MultiDimensionalNumberTensor;
    using PipeTensors for TensorLib.Number;

    struct Position {
        int128 collateralRatioBps;
        int128 utilizationBps;
        int128 volatilityBps;
        int128 daysSincePayment;
        bool open;
        bool liquidated;
    }

    /// @notice Model id (content hash of the risk model's ONNX file).
    string public modelCID;
    /// @notice Positions scoring at or above this P(risky), in ppm, are liquidated.
    int256 public immutable liquidationThresholdPpm;

    mapping(address => Position) public positions;
    /// @notice Last risk score of each borrower, in ppm.
    mapping(address => int256) public lastScore;

    event PositionOpened(address borrower, int128 collateralRatioBps, int128 utilizationBps, int128 volatilityBps, int128 daysSincePayment);
    event RiskScored(address borrower, int256 scorePpm);
    event Liquidated(address borrower, int256 scorePpm);
    event RiskQuoted(address caller, int256 scorePpm);

    constructor(string memory modelCID_, int256 liquidationThresholdPpm_) {
        modelCID = modelCID_;
        liquidationThresholdPpm = liquidationThresholdPpm_;
    }

    /// @notice Open (or replace) the caller's position.
    function openPosition(int128 collateralRatioBps, int128 utilizationBps, int128 volatilityBps, int128 daysSincePayment)
        external
    {
        positions[msg.sender] = Position(collateralRatioBps, utilizationBps, volatilityBps, daysSincePayment, true, false);
        emit PositionOpened(msg.sender, collateralRatioBps, utilizationBps, volatilityBps, daysSincePayment);
    }

    /// @notice Score `borrower`'s open position with the model; liquidate it if the score
    ///         reaches the threshold.
    function checkAndLiquidate(address borrower) external returns (bool liquidated) {
        Position storage p = positions[borrower];
        require(p.open, "no open position");

        int256 score = _score(p.collateralRatioBps, p.utilizationBps, p.volatilityBps, p.daysSincePayment);
        lastScore[borrower] = score;
        emit RiskScored(borrower, score);

        if (score >= liquidationThresholdPpm) {
            p.open = false;
            p.liquidated = true;
            emit Liquidated(borrower, score);
            return true;
        }
        return false;
    }

    /// @notice Score arbitrary features without touching any position (use with `cast call`).
    /// @dev Not `view`: it calls the precompile.
    function scoreOf(int128 collateralRatioBps, int128 utilizationBps, int128 volatilityBps, int128 daysSincePayment)
        external
        returns (int256 scorePpm)
    {
        scorePpm = _score(collateralRatioBps, utilizationBps, volatilityBps, daysSincePayment);
        emit RiskQuoted(msg.sender, scorePpm);
    }

    /// @dev Run the model; return P(risky) in ppm.
    function _score(int128 collateralRatioBps, int128 utilizationBps, int128 volatilityBps, int128 daysSincePayment)
        internal
        returns (int256)
    {
        TensorLib.Number[] memory f = new TensorLib.Number[](4);
        f[0] = PipeTensors.num(collateralRatioBps, 4);
        f[1] = PipeTensors.num(utilizationBps, 4);
        f[2] = PipeTensors.num(volatilityBps, 4);
        f[3] = PipeTensors.num(daysSincePayment, 0);

        // Calls the precompile at 0x...F4 (= OG_INFERENCE_CONTRACT.runModelInference; see PipeTensors.run).
        ModelOutput memory out = PipeTensors.run(
            PipeTensors.request(modelCID, PipeTensors.input(PipeTensors.row("input", f)))
        );

        // probabilities is [1,2]: flat index 1 is P(risky).
        return out.findNumbers("probabilities").at(1).toScale(6);
    }
}
