//! The inference precompile inside real blocks, simulations and calls, on the shared test
//! chain with inference answered from a table: an answered request is charged before the
//! model's answer is used and emits OpenGradient's event; a request without a result stops
//! the transaction with nothing kept; too little gas halts before anything is asked; discovery
//! stops at the first unknown request.

use std::sync::Arc;

use alloy_consensus::{Transaction, TxEnvelope};
use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::SolEvent;
use pipe_chain::test_utils::{
    TableModels, TestChain, TxFactory, inference_call, output, test_model,
};
use pipe_executor::{
    BlockAttributes, CallRequest, Executor, INFERENCE_PRECOMPILE, InferenceGas, SimOutcome,
    TxOutcome, TxRejected, inference::ModelInferenceEvent,
};
use pipe_primitives::StoredTx;

fn stored(tx: TxEnvelope, from: &TxFactory) -> Arc<StoredTx> {
    Arc::new(StoredTx {
        hash: *tx.tx_hash(),
        sender: from.address(),
        tx,
    })
}

struct Setup {
    chain: TestChain,
    models: Arc<TableModels>,
    executor: Executor,
    attrs: BlockAttributes,
}

fn setup() -> Setup {
    let chain = TestChain::new(2);
    let models = Arc::new(TableModels::with_model(test_model()));
    let executor = chain
        .executor
        .clone()
        .with_inference(models.clone(), InferenceGas::default());
    let attrs = executor.next_attributes(&chain.genesis, 1_700_000_000_000, Address::ZERO);
    Setup {
        chain,
        models,
        executor,
        attrs,
    }
}

#[test]
fn an_answered_request_is_charged_and_emits_the_event() {
    let s = setup();
    let model = test_model();
    let (data, key) = inference_call(&model, 7);
    s.models.answer(output(key, 1.25, model.decimals));
    let mut f = s.chain.factory(0);
    let tx = stored(
        f.tx(Some(INFERENCE_PRECOMPILE), U256::ZERO, data.clone()),
        &f,
    );
    let mut block = s
        .executor
        .build_block(s.chain.store.state().unwrap(), s.attrs.clone())
        .unwrap();
    let executed = block.execute(tx).unwrap();
    assert!(matches!(executed.outcome, TxOutcome::Success));
    // The charge is the schedule's, fixed before the model's answer is used.
    let gas = InferenceGas {
        per_unit: s.attrs.inference_gas_price,
        ..InferenceGas::default()
    };
    let inference = gas.cost(model.cost_units, data.len());
    assert!(
        executed.gas_used > 21_000 + inference,
        "{}",
        executed.gas_used
    );
    let done = block.finish().unwrap();
    assert_eq!(done.sidecar.len(), 1);
    let logs = done.receipts[0].logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].address, INFERENCE_PRECOMPILE);
    let event = ModelInferenceEvent::decode_log_data(&logs[0].data).unwrap();
    assert_eq!(event.inferenceID, key.to_string());
    assert_eq!(event.response.numbers[0].values[0].value, 12_500);
}

#[test]
fn a_request_without_a_result_stops_the_transaction_and_keeps_nothing() {
    let s = setup();
    let (data, key) = inference_call(&test_model(), 8);
    let mut f = s.chain.factory(0);
    let tx = stored(f.tx(Some(INFERENCE_PRECOMPILE), U256::ZERO, data), &f);
    let mut block = s
        .executor
        .build_block(s.chain.store.state().unwrap(), s.attrs.clone())
        .unwrap();
    match block.execute(tx) {
        Err(TxRejected::MissingResult { call, .. }) => assert_eq!(call.key, key),
        other => panic!("expected a missing result, got {other:?}"),
    }
    assert_eq!(block.transaction_count(), 0);
    assert_eq!(*s.models.missing.lock(), vec![key]);
    let done = block.finish().unwrap();
    assert!(done.transactions.is_empty() && done.sidecar.is_empty());
}

#[test]
fn too_little_gas_halts_before_the_model_is_asked() {
    let s = setup();
    let model = test_model();
    let (data, key) = inference_call(&model, 9);
    s.models.answer(output(key, 1.0, model.decimals));
    let f = s.chain.factory(0);
    // Enough for the transaction's intrinsic gas and a bit, not for the inference.
    let tx = {
        let mut t = alloy_consensus::TxEip1559 {
            chain_id: f.chain_id,
            nonce: 0,
            gas_limit: 40_000,
            max_fee_per_gas: 100_000_000_000,
            max_priority_fee_per_gas: 1,
            to: alloy_primitives::TxKind::Call(INFERENCE_PRECOMPILE),
            value: U256::ZERO,
            access_list: Default::default(),
            input: data,
        };
        let sig = alloy_network::TxSignerSync::sign_transaction_sync(&f.signer, &mut t).unwrap();
        TxEnvelope::from(alloy_consensus::SignableTransaction::into_signed(t, sig))
    };
    let tx = stored(tx, &f);
    // Discovery says why, so PIPE can reject it before any model runs.
    let outcomes = s
        .executor
        .simulate(
            Arc::new(s.chain.store.state().unwrap()),
            &s.attrs,
            std::slice::from_ref(&*tx),
            s.models.clone(),
        )
        .unwrap();
    assert!(matches!(&outcomes[0], SimOutcome::Underpaid { call, .. } if call.key == key));
    // In a block it halts out of gas, all its gas paid, and nothing was asked of the source.
    let mut block = s
        .executor
        .build_block(s.chain.store.state().unwrap(), s.attrs.clone())
        .unwrap();
    let executed = block.execute(tx).unwrap();
    assert!(matches!(executed.outcome, TxOutcome::Halted));
    assert_eq!(executed.gas_used, 40_000);
    assert!(s.models.missing.lock().is_empty());
    assert!(block.finish().unwrap().sidecar.is_empty());
}

#[test]
fn discovery_stops_at_the_first_request_without_a_result() {
    let s = setup();
    let model = test_model();
    let (first, first_key) = inference_call(&model, 1);
    let (second, second_key) = inference_call(&model, 2);
    s.models.answer(output(first_key, 1.0, model.decimals));
    let mut f = s.chain.factory(0);
    let txs: Vec<StoredTx> = [first, second.clone(), second]
        .into_iter()
        .map(|d| (*stored(f.tx(Some(INFERENCE_PRECOMPILE), U256::ZERO, d), &f)).clone())
        .collect();
    assert_eq!(txs[2].tx.nonce(), 2);
    let outcomes = s
        .executor
        .simulate(
            Arc::new(s.chain.store.state().unwrap()),
            &s.attrs,
            &txs,
            s.models.clone(),
        )
        .unwrap();
    // The third is not simulated: it would run on state the second never produced.
    assert_eq!(outcomes.len(), 2);
    assert!(matches!(&outcomes[0], SimOutcome::Complete { keys, .. } if *keys == vec![first_key]));
    assert!(matches!(&outcomes[1], SimOutcome::Missing(call) if call.key == second_key));
}

#[test]
fn calls_and_estimates_see_the_state_and_a_transfer_costs_21000() {
    let s = setup();
    let from = s.chain.factory(0).address();
    let request = |to: Address, input: Bytes| CallRequest {
        tx: alloy_rpc_types_eth::TransactionRequest::default()
            .from(from)
            .to(to)
            .input(input.into()),
        overrides: None,
    };
    let view = || Arc::new(s.chain.store.state().unwrap());
    let gas = s
        .executor
        .estimate_gas(
            view(),
            &s.attrs,
            request(Address::repeat_byte(5), Bytes::new()),
        )
        .unwrap();
    assert_eq!(gas, 21_000);
    // eth_call of a request nobody can answer fails with the reason instead of waiting.
    let (data, key) = inference_call(&test_model(), 11);
    let err = s
        .executor
        .call(view(), &s.attrs, request(INFERENCE_PRECOMPILE, data))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&key.to_string()), "{err}");
}

alloy_sol_types::sol! {
    function run(bytes[] calls) external;
}

/// ManyInferences (contracts/test): calls 0x…F4 once per entry, passing a failure's reason on.
/// Its artifact's `field`: `bytecode` (creation) or `deployedBytecode`.
fn many_inferences(field: &str) -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contracts/out/ManyInferences.json"
    );
    let artifact: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path).expect("contracts compiled (node tools/js/compile.js)"),
    )
    .unwrap();
    alloy_primitives::hex::decode(artifact[field].as_str().unwrap()).unwrap()
}

/// The chain's bound on distinct requests per transaction is the precompile's: the call past
/// it reverts with the reason before a model runs, so a block includes such a transaction as a
/// revert charged for the requests it made, and eth_call and eth_estimateGas say why.
#[test]
fn a_transaction_past_the_request_bound_reverts_and_pays_for_what_it_used() {
    use alloy_sol_types::SolCall;
    use pipe_executor::inference::MAX_REQUESTS_PER_TX;
    let s = setup();
    let model = test_model();
    let mut deployer = s.chain.factory(1);
    let contract = deployer.address().create(0);
    let deploy = deployer.tx(None, U256::ZERO, many_inferences("bytecode").into());
    let mut block = s
        .executor
        .build_block(s.chain.store.state().unwrap(), s.attrs.clone())
        .unwrap();
    block.execute(stored(deploy, &deployer)).unwrap();
    let mut calls = Vec::new();
    for x in 0..=MAX_REQUESTS_PER_TX as i128 {
        let (data, key) = inference_call(&model, 100 + x);
        s.models.answer(output(key, x as f32, model.decimals));
        calls.push(data);
    }
    // A request repeated is one request: 8 distinct ones, each twice, are within the bound.
    let mut within: Vec<Bytes> = calls[..MAX_REQUESTS_PER_TX].to_vec();
    within.extend_from_slice(&calls[..MAX_REQUESTS_PER_TX]);
    let over = calls.clone();
    let mut f = s.chain.factory(0);
    let ok = block
        .execute(stored(
            f.tx_with_gas(
                Some(contract),
                U256::ZERO,
                runCall { calls: within }.abi_encode().into(),
                1_000_000,
            ),
            &f,
        ))
        .unwrap();
    assert!(matches!(ok.outcome, TxOutcome::Success));
    let reverted = block
        .execute(stored(
            f.tx_with_gas(
                Some(contract),
                U256::ZERO,
                runCall {
                    calls: over.clone(),
                }
                .abi_encode()
                .into(),
                1_000_000,
            ),
            &f,
        ))
        .unwrap();
    assert!(matches!(reverted.outcome, TxOutcome::Reverted));
    // It paid for the eight requests that ran, and nothing ran for the ninth.
    let gas = InferenceGas {
        per_unit: s.attrs.inference_gas_price,
        ..InferenceGas::default()
    };
    let eight = MAX_REQUESTS_PER_TX as u64 * gas.cost(model.cost_units, calls[0].len());
    assert!(
        reverted.gas_used > eight,
        "{} covers {eight}",
        reverted.gas_used
    );
    let done = block.finish().unwrap();
    assert_eq!(
        done.sidecar.len(),
        MAX_REQUESTS_PER_TX,
        "the sidecar holds the eight distinct results, not the ninth"
    );
    // eth_call and eth_estimateGas apply the same rule and give the reason.
    // (The contract is put in place by a state override: the block above is not committed.)
    let view = || Arc::new(s.chain.store.state().unwrap());
    let code = Bytes::from(many_inferences("deployedBytecode"));
    let request = |calls: Vec<Bytes>| CallRequest {
        tx: alloy_rpc_types_eth::TransactionRequest::default()
            .from(f.address())
            .to(contract)
            .input(runCall { calls }.abi_encode().into()),
        overrides: Some(
            [(
                contract,
                alloy_rpc_types_eth::state::AccountOverride::default().with_code(code.clone()),
            )]
            .into_iter()
            .collect(),
        ),
    };
    s.executor
        .call(
            view(),
            &s.attrs,
            request(calls[..MAX_REQUESTS_PER_TX].to_vec()),
        )
        .unwrap();
    for err in [
        s.executor
            .call(view(), &s.attrs, request(over.clone()))
            .unwrap_err(),
        s.executor
            .estimate_gas(view(), &s.attrs, request(over.clone()))
            .unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            text.contains("at most 8 distinct inference requests"),
            "{text}"
        );
    }
}

/// Runtime that forwards its calldata to the precompile and stops whatever the answer.
const SWALLOW_RUNTIME: &[u8] = &[
    0x36, 0x5f, 0x5f, 0x37, // calldatacopy(0, 0, calldatasize)
    0x5f, 0x5f, 0x36, 0x5f, 0x5f, 0x60, 0xf4, 0x5a, 0xf1, // call(gas, 0xF4, 0, 0, size, 0, 0)
    0x50, 0x00, // pop; stop
];
/// The same forwarder, reverting when the precompile's call fails.
const FORWARD_RUNTIME: &[u8] = &[
    0x36, 0x5f, 0x5f, 0x37, 0x5f, 0x5f, 0x36, 0x5f, 0x5f, 0x60, 0xf4, 0x5a, 0xf1, 0x60, 0x13,
    0x57, // jumpi(19, success)
    0x5f, 0x5f, 0xfd, // revert(0, 0)
    0x5b, 0x00, // jumpdest; stop
];

/// Admission refuses what is knowable before any model runs: gas that cannot cover the
/// first request, and a request the precompile refuses when the transaction fails for it. A
/// contract that recovers from the refusal, and a request that only needs its answer, pass.
#[test]
fn admission_refuses_what_is_knowable_before_a_model_runs() {
    use pipe_executor::InferenceRefusal;
    let s = setup();
    let model = test_model();
    let mut unknown = test_model();
    unknown.id = pipe_primitives::ModelId::of(b"no such model");
    let (good, _) = inference_call(&model, 3);
    let (bad, _) = inference_call(&unknown, 3);
    let view = || Arc::new(s.chain.store.state().unwrap());
    let check = |run: &[StoredTx]| s.executor.check_admission(view(), &s.attrs, run).unwrap();
    // Each a sender's only pending transaction (nonce 0).
    let one = |gas: u64, data: &Bytes| {
        let mut f = s.chain.factory(0);
        let tx = f.tx_with_gas(Some(INFERENCE_PRECOMPILE), U256::ZERO, data.clone(), gas);
        check(&[(*stored(tx, &f)).clone()])
    };

    // Direct calls: a good request with enough gas needs its answer (discovery's job); too
    // little gas and an unknown model are refused now.
    assert_eq!(one(1_000_000, &good), Ok(()));
    assert!(matches!(
        one(40_000, &good),
        Err(InferenceRefusal::Underpaid { units: 10, .. })
    ));
    let refused = one(1_000_000, &bad);
    assert!(
        matches!(&refused, Err(InferenceRefusal::Request(r)) if r.contains("model")),
        "{refused:?}"
    );

    // Through contracts deployed earlier in the sender's run: one that swallows the refusal
    // is fine; one that reverts with it is refused.
    let mut d = s.chain.factory(1);
    let (deploy_swallow, swallow) = d.deploy(SWALLOW_RUNTIME);
    let (deploy_forward, forward) = d.deploy(FORWARD_RUNTIME);
    let deploys = [
        (*stored(deploy_swallow, &d)).clone(),
        (*stored(deploy_forward, &d)).clone(),
    ];
    // The run: both deployments, then a call to `to` with `data` (nonce 2).
    let after_deploys = |to: Address, data: &Bytes| {
        let mut f = d.clone();
        let mut run = deploys.to_vec();
        run.push((*stored(f.tx(Some(to), U256::ZERO, data.clone()), &f)).clone());
        check(&run)
    };
    assert_eq!(after_deploys(swallow, &bad), Ok(()));
    assert!(matches!(
        after_deploys(forward, &bad),
        Err(InferenceRefusal::Request(_))
    ));
    assert_eq!(after_deploys(forward, &good), Ok(()));

    // Were such a request in a block, it would revert charged the base only: no model ran.
    let mut block = s
        .executor
        .build_block(s.chain.store.state().unwrap(), s.attrs.clone())
        .unwrap();
    let mut f = s.chain.factory(0);
    // 21000 plus calldata at 4 gas a zero byte and 16 a non-zero one (above the EIP-7623
    // floor here).
    let calldata: u64 = bad.iter().map(|b| if *b == 0 { 4 } else { 16 }).sum();
    let tx = f.tx(Some(INFERENCE_PRECOMPILE), U256::ZERO, bad);
    let executed = block.execute(stored(tx, &f)).unwrap();
    assert!(matches!(executed.outcome, TxOutcome::Reverted));
    assert_eq!(
        executed.gas_used,
        21_000 + calldata + pipe_executor::inference::INFERENCE_BASE_GAS
    );
}
