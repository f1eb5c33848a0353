//! Judged by other people's tools: Foundry (`forge create`, `cast`) drives the node, and the
//! same scripted session is compared field by field against anvil.
//!
//! Needs `npm ci` in tools/js (the README's test command, `.ci/run`, does it).

mod common;

use std::process::{Command, Stdio};

fn tools_installed() {
    let bin =
        common::repo_root().join("tools/js/node_modules/@foundry-rs/cast-linux-amd64/bin/cast");
    assert!(
        bin.exists(),
        "Foundry is not installed: run `npm ci` in tools/js (or the README's test command)"
    );
}

/// Compiles the contracts to `contracts/out` once per test process: the tests here run at
/// once, and each compiling again would rewrite artifacts another is reading (`compile.js`
/// also replaces each file whole, for the other test binaries that read them).
fn compile_contracts() {
    static COMPILED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *COMPILED.get_or_init(|| {
        let root = common::repo_root();
        Command::new("node")
            .arg(root.join("tools/js/compile.js"))
            .arg(root.join("contracts"))
            .arg(root.join("contracts/out"))
            .status()
            .expect("node runs")
            .success()
    });
    assert!(ok, "contracts compile");
}

/// Gives a command that runs forge (or a script that does) build output of its own: forge
/// runs in several tests at once, and two compiling into one `out/forge` could each read the
/// other's half-written artifacts.
fn own_forge_output(cmd: &mut Command, dir: &std::path::Path) {
    cmd.env("FOUNDRY_OUT", dir.join("forge-out"))
        .env("FOUNDRY_CACHE_PATH", dir.join("forge-cache"));
}

/// Runs a client program to its end, off the async workers; prints what it said and returns
/// its standard output. The test fails with `what` if the program did.
async fn run_client(mut cmd: Command, what: &str) -> String {
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("the client runs"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what}");
    stdout
}

/// Runs `scripts/<script> URL` against a fresh in-process dev node; it must pass every check.
async fn smoke_session(script: &str) {
    tools_installed();
    compile_contracts();
    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let url = node.rpc_url();
    let mut cmd = Command::new("bash");
    cmd.arg(common::repo_root().join("scripts").join(script))
        .arg(url);
    own_forge_output(&mut cmd, dir.path());
    let stdout = run_client(cmd, &format!("{script} failed")).await;
    assert!(stdout.contains("checks passed"));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foundry_deploys_calls_and_reads_logs() {
    smoke_session("foundry-smoke.sh").await;
}

/// The example contracts with real tools: `forge create`, `cast send`, `cast call`, against the
/// models the dev chain starts with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foundry_drives_the_example_inference_contracts() {
    smoke_session("inference-smoke.sh").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_session_as_anvil_field_by_field() {
    tools_installed();
    compile_contracts();
    let root = common::repo_root();
    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let anvil_port = common::free_port();
    let mut anvil =
        Command::new(root.join("tools/js/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &anvil_port.to_string(),
                "--hardfork",
                "osaka",
                // Records opcode steps of mined transactions, so debug_traceTransaction's
                // struct logs can be compared (without it anvil answers an empty list).
                "--steps-tracing",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("anvil starts");
    let anvil_url = format!("http://127.0.0.1:{anvil_port}");
    for _ in 0..200 {
        if reqwest::Client::new()
            .post(&anvil_url)
            .json(&serde_json::json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let pipe_url = node.rpc_url();
    // The report goes beside the build output; `target/` may not exist under CARGO_TARGET_DIR.
    let report = root.join("target/anvil-compare.json");
    std::fs::create_dir_all(report.parent().unwrap()).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(root.join("tools/js/compare-anvil.js"))
            .args(["--pipe", &pipe_url, "--anvil", &anvil_url, "--out"])
            .arg(report)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let _ = anvil.kill();
    let _ = anvil.wait();
    println!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "unexpected differences from anvil (see report above)"
    );
    node.shutdown().await;
}

/// ethers v6's `contract.on` and viem's watchers (HTTP filters and WebSocket subscriptions)
/// hear an event, a block and a pending transaction on a node (`tools/js/watchers.js`). With
/// pipe's former error text and numeric ids, ethers crashed and viem heard nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethers_and_viem_watchers_hear_events_blocks_and_pending_transactions() {
    tools_installed();
    compile_contracts();
    let root = common::repo_root();
    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let url = node.rpc_url();
    let mut cmd = Command::new("node");
    cmd.arg(root.join("tools/js/watchers.js"))
        .args(["--rpc", &url]);
    let stdout = run_client(cmd, "a watcher missed its event").await;
    assert_eq!(stdout.matches("ok  ").count(), 5, "{stdout}");
    node.shutdown().await;
}

/// The solc artifact of contract `name`, compiled afresh into a directory of its own (other
/// tests rewrite contracts/out concurrently).
fn compiled_artifact(name: &str) -> serde_json::Value {
    let out = tempfile::tempdir().unwrap();
    let root = common::repo_root();
    let status = Command::new("node")
        .arg(root.join("tools/js/compile.js"))
        .arg(root.join("contracts"))
        .arg(out.path())
        .status()
        .expect("node runs");
    assert!(status.success(), "contracts compile");
    serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("{name}.json"))).unwrap())
        .unwrap()
}

/// The worker registry's runtime code in the dev genesis is what `contracts/src/WorkerRegistry.sol`
/// compiles to (regenerate `crates/executor/src/worker_registry.hex` from
/// `contracts/out/WorkerRegistry.json` when the contract changes).
#[test]
fn the_genesis_worker_registry_is_the_compiled_contract() {
    let artifact = compiled_artifact("WorkerRegistry");
    let compiled: alloy_primitives::Bytes = artifact["deployedBytecode"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(*pipe_executor::attest::WORKER_REGISTRY_CODE, compiled);
}

/// `contracts/src/PipeInference.sol` declares OpenGradient's interface: its functions' selectors
/// and its events' topics are the ones the node's precompile decodes and emits (which a unit
/// test in `pipe-abi` checks against OpenGradient's published values), and a contract written
/// against OpenGradient's names (`contracts/test/OGLanguageConsumer.sol`) compiles.
#[test]
fn the_solidity_interface_is_opengradients() {
    use alloy_sol_types::{SolCall, SolEvent};
    let iface = compiled_artifact("OGInference");
    let abi: alloy_json_abi::JsonAbi = serde_json::from_value(iface["abi"].clone()).unwrap();
    let selector = |name: &str| abi.function(name).unwrap()[0].selector();
    let topic = |name: &str| abi.event(name).unwrap()[0].selector();
    use pipe_abi::*;
    assert_eq!(
        selector("runModelInference"),
        runModelInferenceCall::SELECTOR
    );
    assert_eq!(selector("runLLMCompletion"), runLLMCompletionCall::SELECTOR);
    assert_eq!(selector("runLLMChat"), runLLMChatCall::SELECTOR);
    assert_eq!(
        topic("ModelInferenceEvent"),
        ModelInferenceEvent::SIGNATURE_HASH
    );
    assert_eq!(
        topic("LLMCompletionEvent"),
        LLMCompletionEvent::SIGNATURE_HASH
    );
    assert_eq!(topic("LLMChat"), LLMChat::SIGNATURE_HASH);
    let consumer = compiled_artifact("OGLanguageConsumer");
    assert!(consumer["deployedBytecode"].as_str().unwrap().len() > 2);
}

/// Runs the `pipe` binary this test suite built.
fn pipe_cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipe"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("pipe runs")
}

/// Testing a model-calling contract in forge: `pipe infer` answers a request offline with the
/// bytes a node's precompile returns (compared with `eth_call` on a dev node), `pipe model id`
/// and `pipe model list` (honouring `ETH_RPC_URL`, as cast does) agree on the id, and `forge
/// test --ffi` runs contracts/forge-test with `PipeForge.sol`, which gets the real output at
/// 0x…F4 through `vm.ffi` and `vm.mockCall`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forge_tests_get_real_model_outputs_through_pipe_infer() {
    use alloy_sol_types::SolCall;
    use pipe_executor::inference::runModelInferenceCall;
    tools_installed();
    compile_contracts();
    let root = common::repo_root();
    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let url = node.rpc_url();

    let linreg = common::model_id(&url, "linreg").await;
    let file = root.join("fixtures/models/linreg.onnx");
    let id = pipe_cli(&["model", "id", file.to_str().unwrap()], &[]);
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), linreg);
    let list = pipe_cli(&["model", "list"], &[("ETH_RPC_URL", &url)]);
    assert!(list.status.success(), "{list:?}");
    assert!(
        String::from_utf8_lossy(&list.stdout).contains(&format!("id:         {linreg}")),
        "{list:?}"
    );

    let calldata = alloy_primitives::hex::encode_prefixed(
        runModelInferenceCall {
            request: common::linreg_request(&linreg, [4, 5, 6]),
        }
        .abi_encode(),
    );
    let offline = pipe_cli(&["infer", &calldata], &[]);
    assert!(offline.status.success(), "{offline:?}");
    let on_chain = common::rpc(
        &url,
        "eth_call",
        serde_json::json!([{"to": pipe_executor::INFERENCE_PRECOMPILE, "data": calldata}]),
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&offline.stdout).trim(),
        on_chain["result"].as_str().unwrap()
    );
    // What the precompile refuses, `pipe infer` refuses with the same reason.
    let unknown = alloy_primitives::hex::encode_prefixed(
        runModelInferenceCall {
            request: common::linreg_request(
                &pipe_primitives::ModelId::of(b"no such model").to_string(),
                [4, 5, 6],
            ),
        }
        .abi_encode(),
    );
    let refused = pipe_cli(&["infer", &unknown], &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown model"));
    node.shutdown().await;

    let forge = root.join("tools/js/node_modules/@foundry-rs/forge-linux-amd64/bin/forge");
    let mut cmd = Command::new(forge);
    cmd.args(["test", "--ffi"])
        .current_dir(root.join("contracts"))
        .env("PIPE_BIN", env!("CARGO_BIN_EXE_pipe"));
    let forge_dir = tempfile::tempdir().unwrap();
    own_forge_output(&mut cmd, forge_dir.path());
    let stdout = run_client(cmd, "forge test failed").await;
    assert!(stdout.contains("3 tests passed, 0 failed"), "{stdout}");
}

/// web3.py as its tutorials use it, against a dev node: `.transact()` from the node's unlocked
/// default account (a deployment and calls), `create_filter` on a contract event and a block
/// filter, `send_transaction` with fees filled in, and `sign_typed_data` recovered locally
/// (`tools/py/web3_session.py`, web3.py from the fixture venv that `scripts/fixtures.sh`
/// makes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web3_py_transacts_from_the_unlocked_account_and_reads_filters() {
    compile_contracts();
    let root = common::repo_root();
    let python = root.join("tools/py/.venv/bin/python");
    assert!(
        python.exists(),
        "the fixture venv is missing: run scripts/fixtures.sh (or the README's test command)"
    );
    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let url = node.rpc_url();
    let mut cmd = Command::new(python);
    cmd.arg(root.join("tools/py/web3_session.py")).arg(url);
    let stdout = run_client(cmd, "the web3.py session failed").await;
    assert!(stdout.contains("checks passed"), "{stdout}");
    node.shutdown().await;
}

/// The live pipeline page in a real headless Chromium (Debian's, driven by playwright-core):
/// three inference transactions on one worker whose model takes 1.5 s are seen waiting for
/// inference and then included, with the request running, the worker's runs, the blocks, the
/// price chart and the models (`tools/js/pipeline-page.js`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_page_shows_transactions_move_through_their_states() {
    tools_installed();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium is not installed: `apt-get install chromium` (the README's test command does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.block_time =
        pipe_node::config::BlockTime::Interval(std::time::Duration::from_millis(300));
    config.workers = 1;
    config.worker_capacity = 1;
    // Long beside the page's 200 ms samples, so a busy machine still shows each wait.
    config.model_latency = std::time::Duration::from_millis(1500);
    config.ui_addr = Some("127.0.0.1:0".parse().unwrap());
    let node = pipe_node::node::launch(config, std::sync::Arc::new(pipe_primitives::SystemClock))
        .await
        .expect("node starts");
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let linreg = common::model_id(&url, "linreg").await;
    let mut cmd = Command::new("node");
    cmd.arg(common::repo_root().join("tools/js/pipeline-page.js"))
        .args(["--page", &format!("http://{}/", node.ui_addr.unwrap())])
        .args(["--rpc", &url, "--model", "linreg"])
        .env("CHROMIUM", &chromium);
    for (i, key) in node.dev_keys.iter().take(3).enumerate() {
        let raw = common::inference_raw(
            key,
            chain_id,
            0,
            common::linreg_request(&linreg, [i as i128 + 1, 2, 3]),
            1_000_000_000,
        );
        cmd.arg("--tx").arg(raw.to_string());
    }
    let stdout = run_client(cmd, "the pipeline page did not show what happened").await;
    assert!(stdout.contains("all checks passed"));
    node.shutdown().await;
}
