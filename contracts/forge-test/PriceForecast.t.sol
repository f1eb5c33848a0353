// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "../src/PipeForge.sol";
import "../src/PipeTensors.sol";
import "../src/examples/PriceForecast.sol";

/// A contract that calls a model, tested in forge with the model's real output.
/// Run: `PIPE_BIN=path/to/pipe forge test --ffi` (from contracts/).
contract PriceForecastTest is PipeForge {
    /// The dev chain's example `forecast_gbr`: `pipe model id fixtures/models/forecast_gbr.onnx`.
    string constant FORECAST_GBR = "bafkreie267lzw4dxjgljrezztevdt5dos4i3ajktphm332xzd56gk3fska";

    PriceForecast internal forecaster;

    function setUp() public {
        forecaster = new PriceForecast(FORECAST_GBR);
    }

    /// Eight prices in cents, oldest first: a case of fixtures/models/reference.json, rounded.
    function window() internal pure returns (int128[8] memory) {
        return [int128(10079), 10126, 10188, 10100, 10258, 10236, 10369, 10429];
    }

    /// The request PriceForecast makes for `w`: the mock answers exactly this calldata.
    function request(int128[8] memory w) internal pure returns (ModelInferenceRequest memory) {
        TensorLib.Number[] memory f = new TensorLib.Number[](8);
        for (uint256 i = 0; i < 8; i++) {
            f[i] = PipeTensors.num(w[i], 2);
        }
        return PipeTensors.request(FORECAST_GBR, PipeTensors.input(PipeTensors.row("input", f)));
    }

    function test_forecast_is_the_models_answer() public {
        int128[8] memory w = window();
        ModelOutput memory out = pipeMock(request(w));
        for (uint256 i = 0; i < 8; i++) {
            forecaster.pushPrice(w[i]);
        }
        int256 cents = forecaster.forecast();
        // onnxruntime answers 104.19235 for this window (reference.json, case 1): the model
        // ran, and the contract truncated its answer to cents.
        require(cents == 10419, "not the model's forecast");
        require(forecaster.lastForecastCents() == 10419, "forecast not recorded");
        require(out.numbers.length == 1 && out.numbers[0].values.length == 1, "one output value");
        require(!out.is_simulation_result, "a real output");
    }

    function test_another_window_gets_another_answer() public {
        int128[8] memory w = window();
        for (uint256 i = 0; i < 8; i++) {
            w[i] -= 500;
        }
        pipeMock(request(w));
        int256 cents = forecaster.forecastFor(w);
        require(cents != 10419 && cents > 9000 && cents < 11000, "a forecast for this window");
    }

    function test_without_the_helper_the_model_call_fails() public {
        // forge's EVM has nothing at 0xF4: the helper is what makes the model answer.
        (bool ok,) = address(forecaster).call(abi.encodeCall(PriceForecast.forecastFor, (window())));
        require(!ok, "0xF4 answered without the helper");
    }
}
