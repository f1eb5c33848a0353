// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "../PipeInference.sol";
import "../PipeTensors.sol";

/// @title ChainedInference — two model calls in one transaction, the second fed by the first.
/// @notice 1. `forecast_gbr` predicts the next price from the last 8 (cents, sent as Number(x, 2)).
///         2. The expected move |forecast - last| / last becomes the volatility feature
///            (basis points, clamped to [0, 10000], sent as Number(x, 4)).
///         3. `risk_logreg` scores [collateral, utilization, volatility, days]; P(risky) in ppm.
contract ChainedInference {
    using PipeTensors for ModelOutput;
    using PipeTensors for TensorLib.MultiDimensionalNumberTensor;
    using PipeTensors for TensorLib.Number;

    string public forecastModel;
    string public riskModel;

    int256 public lastForecastCents;
    int256 public lastVolatilityBps;
    int256 public lastRiskPpm;

    event Chained(int256 forecastCents, int256 volatilityBps, int256 riskPpm);

    constructor(string memory forecastModel_, string memory riskModel_) {
        forecastModel = forecastModel_;
        riskModel = riskModel_;
    }

    /// @param pricesCents The last 8 prices, oldest first, in cents; the last must be > 0.
    /// @param collateralRatioBps Collateral ratio in bps (1.5 = 15000).
    /// @param utilizationBps Debt utilization in bps (0..10000).
    /// @param daysSincePayment Days since the last payment (0..90).
    function run(
        int128[8] calldata pricesCents,
        int128 collateralRatioBps,
        int128 utilizationBps,
        int128 daysSincePayment
    ) external returns (int256 forecastCents, int256 riskPpm) {
        // --- 1. forecast
        TensorLib.Number[] memory p = new TensorLib.Number[](8);
        for (uint256 i = 0; i < 8; i++) {
            p[i] = PipeTensors.num(pricesCents[i], 2);
        }
        // Calls the precompile at 0x...F4 (= OG_INFERENCE_CONTRACT.runModelInference; see PipeTensors.run).
        ModelOutput memory fOut = PipeTensors.run(
            PipeTensors.request(forecastModel, PipeTensors.input(PipeTensors.row("input", p)))
        );
        forecastCents = fOut.findNumbers("variable").first().toScale(2);

        // --- 2. volatility feature = |forecast - last| / last, in bps, clamped to [0, 1]
        int256 last = pricesCents[7];
        require(last > 0, "last price must be positive");
        int256 move = forecastCents - last;
        if (move < 0) move = -move;
        int256 volatilityBps = (move * 10_000) / last;
        if (volatilityBps > 10_000) volatilityBps = 10_000;

        // --- 3. risk, fed by the forecast
        TensorLib.Number[] memory r = new TensorLib.Number[](4);
        r[0] = PipeTensors.num(collateralRatioBps, 4);
        r[1] = PipeTensors.num(utilizationBps, 4);
        r[2] = PipeTensors.num(int128(volatilityBps), 4); // 0..10000, fits
        r[3] = PipeTensors.num(daysSincePayment, 0);
        // Calls the precompile at 0x...F4 (= OG_INFERENCE_CONTRACT.runModelInference; see PipeTensors.run).
        ModelOutput memory rOut = PipeTensors.run(
            PipeTensors.request(riskModel, PipeTensors.input(PipeTensors.row("input", r)))
        );
        riskPpm = rOut.findNumbers("probabilities").at(1).toScale(6);

        lastForecastCents = forecastCents;
        lastVolatilityBps = volatilityBps;
        lastRiskPpm = riskPpm;
        emit Chained(forecastCents, volatilityBps, riskPpm);
    }
}
