// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "../PipeInference.sol";
import "../PipeTensors.sol";

/// @title PriceForecast — forecasts the next price from the last 8 with an ONNX model.
/// @notice Model `forecast_gbr` (gradient-boosted regressor):
///           input  "input"    shape [1,8]: the last 8 prices, oldest first
///           output "variable" shape [1,1]: the predicted next price
///         Prices are in cents, sent to the model as Number(cents, 2) (i.e. in dollars).
contract PriceForecast {
    using PipeTensors for ModelOutput;
    using PipeTensors for TensorLib.MultiDimensionalNumberTensor;
    using PipeTensors for TensorLib.Number;

    uint256 public constant WINDOW = 8;

    /// @notice Model id (content hash of the forecast model's ONNX file).
    string public modelCID;

    /// @notice Ring buffer of the last 8 prices, in cents.
    int128[8] public prices;
    /// @notice Ring slot the next price is written to (= the oldest price once full).
    uint256 public head;
    /// @notice Number of prices pushed so far, capped at 8.
    uint256 public count;

    /// @notice Last forecast, in cents.
    int256 public lastForecastCents;

    event PricePushed(int128 priceCents);
    event Forecast(int256 predictedCents);

    constructor(string memory modelCID_) {
        modelCID = modelCID_;
    }

    /// @notice Append a price (in cents), dropping the oldest once 8 are stored.
    function pushPrice(int128 priceCents) external {
        prices[head] = priceCents;
        head = (head + 1) % WINDOW;
        if (count < WINDOW) count++;
        emit PricePushed(priceCents);
    }

    /// @notice Forecast the next price from the 8 stored prices.
    function forecast() external returns (int256 predictedCents) {
        require(count == WINDOW, "need 8 prices");
        int128[8] memory window;
        for (uint256 i = 0; i < WINDOW; i++) {
            window[i] = prices[(head + i) % WINDOW]; // oldest first
        }
        predictedCents = _record(_predict(window));
    }

    /// @notice Forecast the next price from the given 8 prices (oldest first, in cents).
    /// @dev Not `view`: it calls the precompile. Also records the result like `forecast()`.
    function forecastFor(int128[8] calldata pricesCents) external returns (int256 predictedCents) {
        predictedCents = _record(_predict(pricesCents));
    }

    function _record(int256 predictedCents) internal returns (int256) {
        lastForecastCents = predictedCents;
        emit Forecast(predictedCents);
        return predictedCents;
    }

    /// @dev Run the model on 8 prices; return the prediction in cents (truncated toward zero).
    function _predict(int128[8] memory pricesCents) internal returns (int256) {
        TensorLib.Number[] memory f = new TensorLib.Number[](WINDOW);
        for (uint256 i = 0; i < WINDOW; i++) {
            f[i] = PipeTensors.num(pricesCents[i], 2);
        }
        // Calls the precompile at 0x...F4 (= OG_INFERENCE_CONTRACT.runModelInference; see PipeTensors.run).
        ModelOutput memory out = PipeTensors.run(
            PipeTensors.request(modelCID, PipeTensors.input(PipeTensors.row("input", f)))
        );
        return out.findNumbers("variable").first().toScale(2);
    }
}
