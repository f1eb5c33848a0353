//! The inference precompile end to end: real node on a loopback port, alloy's provider,
//! every fixture model through `eth_call` and through mined transactions, compared with
//! onnxruntime's reference outputs; the event; bad requests; a contract chaining two calls;
//! models surviving a restart.

mod common;

use alloy_network::{EthereumWallet, TransactionBuilder};
use alloy_primitives::{Address, Bytes, U256, keccak256};
use alloy_provider::{Provider, ProviderBuilder};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolEvent, SolValue, sol};
use pipe_executor::inference::{
    INFERENCE_BASE_GAS, INFERENCE_PRECOMPILE, ModelInferenceEvent, ModelInferenceRequest,
    ModelInput, ModelOutput, MultiDimensionalNumberTensor, Number, StringTensor,
    runModelInferenceCall,
};
use serde_json::Value;

sol! {
    function run(int128[8] pricesCents, int128 collateralRatioBps, int128 utilizationBps, int128 daysSincePayment)
        returns (int256 forecastCents, int256 riskPpm);
    function lastForecastCents() returns (int256);
    function lastVolatilityBps() returns (int256);
}

fn reference() -> serde_json::Map<String, Value> {
    let path = common::repo_root().join("fixtures/models/reference.json");
    serde_json::from_str::<Value>(&std::fs::read_to_string(path).unwrap())
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

/// An f32 as a Number that converts back to exactly that f32 (18 decimals keep 1e-18 of it).
fn number(x: f32) -> Number {
    Number {
        value: (x as f64 * 1e18).round() as i128,
        decimals: 18,
    }
}

/// The request for one reference case.
fn request(cid: &str, spec: &Value, case: &Value) -> ModelInferenceRequest {
    let mut numbers = Vec::new();
    let mut strings = Vec::new();
    for input in spec["inputs"].as_array().unwrap() {
        let name = input["name"].as_str().unwrap();
        let v = &case["inputs"][name];
        let values = v["values"].as_array().unwrap();
        if input["dtype"] == "string" {
            strings.push(StringTensor {
                name: name.into(),
                values: values
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect(),
            });
        } else {
            numbers.push(MultiDimensionalNumberTensor {
                name: name.into(),
                values: values
                    .iter()
                    .map(|x| match x {
                        // NaN cannot be a Number; the imputer cases with NaN are skipped.
                        Value::String(_) => Number {
                            value: 0,
                            decimals: 0,
                        },
                        x if input["dtype"] == "int64" => Number {
                            value: x.as_i64().unwrap() as i128,
                            decimals: 0,
                        },
                        x => number(x.as_f64().unwrap() as f32),
                    })
                    .collect(),
                shape: v["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as u32)
                    .collect(),
            });
        }
    }
    ModelInferenceRequest {
        mode: 0,
        modelCID: cid.into(),
        input: ModelInput { numbers, strings },
    }
}

fn has_nan(case: &Value) -> bool {
    case["inputs"].to_string().contains("\"nan\"")
}

/// Checks an output against the reference within the model's decimals.
fn compare(model: &str, spec: &Value, case: &Value, out: &ModelOutput) {
    assert!(!out.is_simulation_result, "{model}: placeholder output");
    for o in spec["outputs"].as_array().unwrap() {
        let name = o["name"].as_str().unwrap();
        let want = &case["outputs"][name];
        let values = want["values"].as_array().unwrap();
        if o["dtype"] == "string" {
            let got = out
                .strings
                .iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("{model}: no {name}"));
            let want: Vec<&str> = values.iter().map(|v| v.as_str().unwrap()).collect();
            assert_eq!(got.values, want, "{model} {name}");
            continue;
        }
        let got = out
            .numbers
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{model}: no {name}"));
        let shape: Vec<u32> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got.shape, shape, "{model} {name} shape");
        assert_eq!(got.values.len(), values.len());
        for (i, (g, w)) in got.values.iter().zip(values).enumerate() {
            let w = w.as_f64().unwrap();
            let g = g.value as f64 / 10f64.powi(g.decimals as i32);
            let step = if o["dtype"] == "int64" { 0.0 } else { 1e-8 };
            let tol = step + 1e-4 * w.abs().max(1.0);
            assert!(
                (g - w).abs() <= tol,
                "{model} {name}[{i}]: node {g} vs onnxruntime {w}"
            );
        }
    }
}

async fn upload(url: &str, file: &str) -> String {
    let bytes = std::fs::read(common::repo_root().join("fixtures/models").join(file)).unwrap();
    let meta = common::rpc(
        url,
        "pipe_uploadModel",
        serde_json::json!([Bytes::from(bytes), {"name": file}]),
    )
    .await;
    meta["result"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("upload {file}: {meta}"))
        .to_string()
}

async fn call(url: &str, data: &[u8]) -> Value {
    common::rpc(url, "eth_call", serde_json::json!([{"to": INFERENCE_PRECOMPILE, "data": Bytes::copy_from_slice(data)}, "latest"]))
        .await
}

/// Sends `tx` and waits for its receipt.
async fn mined(
    provider: &impl Provider,
    tx: TransactionRequest,
) -> alloy_rpc_types_eth::TransactionReceipt {
    provider
        .send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap()
}

/// The inference gas price block `number` charged, from its header.
async fn block_price(provider: &impl Provider, number: u64) -> u64 {
    let block = provider
        .get_block_by_number(number.into())
        .await
        .unwrap()
        .expect("block exists");
    pipe_primitives::InferenceFields::decode(&block.header.extra_data)
        .expect("pipe header")
        .gas_price
}

fn wallet(url: &str, node: &pipe_node::node::RunningNode) -> impl Provider + use<> {
    let signer: PrivateKeySigner = node.dev_keys[0].clone();
    ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_by_call_and_transaction_matches_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let url = node.rpc_url();
    let provider = wallet(&url, &node);
    let reference = reference();
    let listed =
        common::rpc(&url, "pipe_listModels", serde_json::json!([])).await["result"].clone();
    assert!(
        listed.as_array().unwrap().len() >= 10,
        "dev chain starts with the example models: {listed}"
    );

    let mut checked = 0;
    for (model, spec) in &reference {
        // Every model, preloaded or not, through the upload RPC: same file, same id.
        let cid = upload(&url, spec["file"].as_str().unwrap()).await;
        for case in spec["cases"].as_array().unwrap() {
            if has_nan(case) {
                continue;
            }
            let req = request(&cid, spec, case);
            let data = runModelInferenceCall {
                request: req.clone(),
            }
            .abi_encode();
            let res = call(&url, &data).await;
            let raw: Bytes = serde_json::from_value(res["result"].clone())
                .unwrap_or_else(|_| panic!("{model}: {res}"));
            let out = runModelInferenceCall::abi_decode_returns(&raw).unwrap();
            compare(model, spec, case, &out);
            checked += 1;
        }
        // The first case again, as a mined transaction straight to the precompile.
        let case = &spec["cases"][0];
        let req = request(&cid, spec, case);
        let data = runModelInferenceCall {
            request: req.clone(),
        }
        .abi_encode();
        let tx = TransactionRequest::default()
            .with_to(INFERENCE_PRECOMPILE)
            .with_input(data.clone());
        let receipt = mined(&provider, tx).await;
        assert!(receipt.status(), "{model}: transaction failed");
        let meta =
            common::rpc(&url, "pipe_getModel", serde_json::json!([cid])).await["result"].clone();
        let cost_units = meta["costUnits"].as_u64().unwrap();
        let price = block_price(&provider, receipt.block_number.unwrap()).await;
        assert!(
            receipt.gas_used >= 21_000 + INFERENCE_BASE_GAS + cost_units * price,
            "{model}: gas {}",
            receipt.gas_used
        );
        let logs = receipt.inner.logs();
        assert_eq!(logs.len(), 1, "{model}: one event");
        assert_eq!(logs[0].address(), INFERENCE_PRECOMPILE);
        let event = ModelInferenceEvent::decode_log_data(&logs[0].inner.data).unwrap();
        assert_eq!(event.inferenceID, keccak256(req.abi_encode()).to_string());
        assert_eq!(event.request, req);
        if !has_nan(case) {
            compare(model, spec, case, &event.response);
        }
    }
    assert!(checked >= 50, "only {checked} cases checked");

    // Models persist with the chain data.
    let before =
        common::rpc(&url, "pipe_listModels", serde_json::json!([])).await["result"].clone();
    node.shutdown().await;
    let node = common::dev_node(dir.path()).await;
    let after =
        common::rpc(&node.rpc_url(), "pipe_listModels", serde_json::json!([])).await["result"]
            .clone();
    assert_eq!(before, after);
    // Every fixture model, and the dev chain's language model beside them.
    let kinds: Vec<&str> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "onnx").count(),
        reference.len()
    );
    assert_eq!(kinds.iter().filter(|k| **k == "llm").count(), 1);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_revert_with_reasons_and_bad_uploads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let url = node.rpc_url();
    let cid = upload(&url, "risk_logreg.onnx").await;
    let n = |v: i128, d: i128| Number {
        value: v,
        decimals: d,
    };
    let req = |mode: u8, cid: &str, name: &str, values: Vec<Number>, shape: Vec<u32>| {
        runModelInferenceCall {
            request: ModelInferenceRequest {
                mode,
                modelCID: cid.into(),
                input: ModelInput {
                    numbers: vec![MultiDimensionalNumberTensor {
                        name: name.into(),
                        values,
                        shape,
                    }],
                    strings: vec![],
                },
            },
        }
        .abi_encode()
    };
    let four = || vec![n(15, 1), n(5, 1), n(2, 1), n(10, 0)];
    let unknown = pipe_primitives::ModelId::of(b"nothing").to_string();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            req(1, &cid, "input", four(), vec![1, 4]),
            "ZKML mode is not supported",
        ),
        (req(9, &cid, "input", four(), vec![1, 4]), "unknown mode 9"),
        (
            req(0, &unknown, "input", four(), vec![1, 4]),
            "unknown model",
        ),
        (
            req(0, "QmNotACid", "input", four(), vec![1, 4]),
            "invalid model id",
        ),
        (
            req(0, &cid, "input", four()[..3].to_vec(), vec![1, 4]),
            "has 3 values for shape [1, 4]",
        ),
        (req(0, &cid, "input", four(), vec![2, 2]), "does not match"),
        (
            req(
                0,
                &cid,
                "input",
                vec![n(1, 40), n(1, 0), n(1, 0), n(1, 0)],
                vec![1, 4],
            ),
            "decimals 40 out of range",
        ),
        (req(0, &cid, "x", four(), vec![1, 4]), "no input `x`"),
        (vec![0xde, 0xad, 0xbe, 0xef], "unknown function"),
        (runModelInferenceCall::SELECTOR.to_vec(), "malformed"),
    ];
    for (data, why) in &cases {
        let res = call(&url, data).await;
        let msg = res["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{why}: no error in {res}"));
        assert_eq!(res["error"]["code"], 3, "{res}");
        assert!(
            msg.starts_with("execution reverted: ") && msg.contains(why),
            "{msg:?} lacks {why:?}"
        );
        let est = common::rpc(
            &url,
            "eth_estimateGas",
            serde_json::json!([{"to": INFERENCE_PRECOMPILE, "data": Bytes::copy_from_slice(data)}]),
        )
        .await;
        assert!(
            est["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(why),
            "estimate: {est}"
        );
    }
    // A bad request sent as a transaction is refused by eth_sendRawTransaction with the same
    // reason: it could only revert (a block would charge it the base). Nothing is acknowledged.
    // (Nonce 0 each time: the wallet's nonce cache would count the refused ones.) A shape the
    // model's graph rejects is the model's failure, known only once it ran: that one is
    // included as a revert that pays the model's cost.
    let provider = wallet(&url, &node);
    let model_fails = "does not match";
    for (data, why) in cases.iter().filter(|(_, why)| *why != model_fails) {
        let tx = TransactionRequest::default()
            .with_nonce(0)
            .with_to(INFERENCE_PRECOMPILE)
            .with_input(data.clone())
            .with_gas_limit(200_000);
        let e = match provider.send_transaction(tx).await {
            Ok(p) => panic!("{why}: acknowledged as {}", p.tx_hash()),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("inference request refused") && e.contains(why),
            "{why}: {e}"
        );
    }
    let (data, _) = cases.iter().find(|(_, why)| *why == model_fails).unwrap();
    let tx = TransactionRequest::default()
        .with_nonce(0)
        .with_to(INFERENCE_PRECOMPILE)
        .with_input(data.clone())
        .with_gas_limit(200_000);
    let failed = mined(&provider, tx).await;
    assert!(!failed.status());
    assert!(failed.logs().is_empty());
    let price = block_price(&provider, failed.block_number.unwrap()).await;
    let units =
        common::rpc(&url, "pipe_getModel", serde_json::json!([cid])).await["result"]["costUnits"]
            .as_u64()
            .unwrap();
    assert!(
        failed.gas_used >= pipe_executor::inference::INFERENCE_BASE_GAS + units * price,
        "{} at price {price} for {units} units",
        failed.gas_used
    );
    // Too little gas for the model's cost: refused by the RPC before any model runs, with the
    // reason (the precompile would halt out of gas; admission's simulation sees that first).
    let tx = TransactionRequest::default()
        .with_nonce(1)
        .with_to(INFERENCE_PRECOMPILE)
        .with_input(req(0, &cid, "input", four(), vec![1, 4]))
        .with_gas_limit(50_000);
    let e = provider.send_transaction(tx).await.unwrap_err().to_string();
    assert!(e.contains("gas cannot cover inference"), "{e}");

    // Uploads: junk, oversized, disallowed options.
    for (params, why) in [
        (serde_json::json!(["0xdeadbeef"]), "model rejected"),
        (
            serde_json::json!([Bytes::from(vec![0u8; 2 * 1024 * 1024 + 1])]),
            "limit",
        ),
        (
            serde_json::json!([Bytes::from(std::fs::read(common::repo_root().join("fixtures/models/linreg.onnx")).unwrap()), {"decimals": 30}]),
            "decimals 30",
        ),
        (
            serde_json::json!([Bytes::from(std::fs::read(common::repo_root().join("fixtures/models/linreg.onnx")).unwrap()), {"decimals": 4}]),
            "cannot change",
        ),
        (serde_json::json!(["0x00", {"bogus": 1}]), "unknown field"),
        (serde_json::json!([]), "invalid"),
    ] {
        let res = common::rpc(&url, "pipe_uploadModel", params).await;
        // jsonrpsee's own parameter errors carry the detail in `data`.
        assert!(res["error"].is_object(), "{why}: {res}");
        let msg = format!("{} {}", res["error"]["message"], res["error"]["data"]).to_lowercase();
        assert!(msg.contains(&why.to_lowercase()), "{msg:?} lacks {why:?}");
    }
    let res = common::rpc(&url, "pipe_getModel", serde_json::json!(["nope"])).await;
    assert_eq!(res["error"]["code"], -32602);
    let res = common::rpc(&url, "pipe_getModel", serde_json::json!([unknown])).await;
    assert_eq!(res["result"], Value::Null);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_feeds_one_inference_into_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let url = node.rpc_url();
    let provider = wallet(&url, &node);
    let forecast = upload(&url, "forecast_gbr.onnx").await;
    let risk = upload(&url, "risk_logreg.onnx").await;
    let artifact: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("contracts/out/ChainedInference.json"))
            .expect("contracts compiled (node tools/js/compile.js)"),
    )
    .unwrap();
    let mut code = alloy_primitives::hex::decode(artifact["bytecode"].as_str().unwrap()).unwrap();
    code.extend((forecast.clone(), risk.clone()).abi_encode_params());
    let receipt = mined(
        &provider,
        TransactionRequest::default().with_deploy_code(code),
    )
    .await;
    let chained: Address = receipt.contract_address.unwrap();

    let prices: [i128; 8] = [10000, 10100, 10050, 10200, 10300, 10250, 10400, 10500];
    let data = runCall {
        pricesCents: prices,
        collateralRatioBps: 15000,
        utilizationBps: 5000,
        daysSincePayment: 10,
    }
    .abi_encode();
    let tx = TransactionRequest::default()
        .with_to(chained)
        .with_input(data);
    let receipt = mined(&provider, tx).await;
    assert!(receipt.status());
    let events: Vec<_> = receipt
        .logs()
        .iter()
        .filter(|l| l.address() == INFERENCE_PRECOMPILE)
        .map(|l| ModelInferenceEvent::decode_log_data(&l.inner.data).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "two inference calls in one transaction");
    assert_eq!(events[0].request.modelCID, forecast);
    assert_eq!(events[1].request.modelCID, risk);
    // The second request's volatility feature is derived from the first response.
    let predicted = &events[0].response.numbers[0].values[0];
    let forecast_cents = predicted.value / 10i128.pow(predicted.decimals as u32 - 2);
    let last = prices[7];
    let volatility_bps = (((forecast_cents - last).abs() * 10_000) / last).min(10_000);
    let sent = &events[1].request.input.numbers[0].values[2];
    assert_eq!((sent.value, sent.decimals), (volatility_bps, 4));
    let stored = provider
        .call(
            TransactionRequest::default()
                .with_to(chained)
                .with_input(lastVolatilityBpsCall {}.abi_encode()),
        )
        .await
        .unwrap();
    assert_eq!(
        U256::from_be_slice(&stored),
        U256::from(volatility_bps as u128)
    );
    node.shutdown().await;
}

/// `pipe model add FILE --rpc URL` uploads and prints the id alone on its last line; `pipe model
/// list` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_command_uploads_to_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let url = node.rpc_url();
    let file = common::repo_root().join("fixtures/models/svc_linear.onnx");
    let expected = pipe_primitives::ModelId::of(&std::fs::read(&file).unwrap()).to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
                .args(args)
                .output()
                .expect("pipe runs")
        })
    };
    let out = run(vec![
        "model".into(),
        "add".into(),
        file.display().to_string(),
        "--rpc".into(),
        url.clone(),
        "--decimals".into(),
        "4".into(),
    ])
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().last(), Some(expected.as_str()));
    assert!(stdout.contains("decimals:   4"), "{stdout}");
    let meta =
        common::rpc(&url, "pipe_getModel", serde_json::json!([expected])).await["result"].clone();
    assert_eq!(meta["name"], "svc_linear");
    assert_eq!(meta["decimals"], 4);

    let out = run(vec![
        "model".into(),
        "list".into(),
        "--rpc".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("svc_linear"));
    // A file that is not a model: a clear error and a failing exit code.
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not onnx").unwrap();
    let out = run(vec![
        "model".into(),
        "add".into(),
        junk.display().to_string(),
        "--rpc".into(),
        url,
    ])
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("model rejected"));
    node.shutdown().await;
}
