//! Traces run where the traced execution happened: a transaction of a block after the block's
//! transactions ahead of it, with the block's inference answers; a call as `eth_call` runs
//! it. The precompile is a frame of the call trace, with the request in and the answer out.

use std::sync::Arc;

use alloy_consensus::{Transaction, TxEnvelope};
use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_rpc_types_eth::TransactionRequest;
use pipe_chain::test_utils::{
    STORE_RUNTIME, TableModels, TestChain, TxFactory, inference_call, output, store_call,
    test_model,
};
use pipe_executor::{
    BlockAttributes, CallRequest, Executor, INFERENCE_PRECOMPILE, InferenceGas, TxOutcome,
    trace::{GethDebugTracingOptions, GethTrace, InBlock, TraceError},
};
use pipe_primitives::StoredTx;

/// Forwards its calldata to 0xF4 and returns what came back (reverting if the call failed).
const FORWARD_RUNTIME: &[u8] = &[
    0x36, 0x5f, 0x5f, 0x37, // calldatacopy(0, 0, calldatasize)
    0x5f, 0x5f, 0x36, 0x5f, 0x5f, 0x60, 0xf4, 0x5a, 0xf1, // call(gas, 0xF4, 0, 0, size, 0, 0)
    0x3d, 0x5f, 0x5f, 0x3e, // returndatacopy(0, 0, returndatasize)
    0x60, 0x17, 0x57, // jumpi(23, success)
    0x3d, 0x5f, 0xfd, // revert(0, returndatasize)
    0x5b, 0x3d, 0x5f, 0xf3, // jumpdest; return(0, returndatasize)
];

fn stored(tx: TxEnvelope, from: &TxFactory) -> StoredTx {
    StoredTx {
        hash: *tx.tx_hash(),
        sender: from.address(),
        tx,
    }
}

fn opts(json: serde_json::Value) -> GethDebugTracingOptions {
    serde_json::from_value(json).expect("tracing options")
}

struct Block {
    chain: TestChain,
    executor: Executor,
    attrs: BlockAttributes,
    txs: Vec<StoredTx>,
    gas_used: Vec<u64>,
    forwarder: Address,
    request: Bytes,
    answer: Bytes,
}

/// A block of three: the forwarder's deployment, a call through it to a model, a transfer.
fn block() -> Block {
    let chain = TestChain::new(2);
    let models = Arc::new(TableModels::with_model(test_model()));
    let executor = chain
        .executor
        .clone()
        .with_inference(models.clone(), InferenceGas::default());
    let attrs = executor.next_attributes(&chain.genesis, 1_700_000_000_000, Address::ZERO);
    let model = test_model();
    let (request, key) = inference_call(&model, 5);
    let result = output(key, 2.5, model.decimals);
    let answer = result.payload.clone();
    models.answer(result);
    let mut a = chain.factory(1);
    let (deploy, forwarder) = a.deploy(FORWARD_RUNTIME);
    let deploy = stored(deploy, &a);
    let call = stored(a.tx(Some(forwarder), U256::ZERO, request.clone()), &a);
    let mut b = chain.factory(0);
    let transfer = stored(b.transfer(Address::repeat_byte(7), U256::from(5)), &b);
    let txs = vec![deploy, call, transfer];
    let mut builder = executor
        .build_block(chain.store.state().unwrap(), attrs.clone())
        .unwrap();
    let gas_used = txs
        .iter()
        .map(|tx| {
            let executed = builder.execute(Arc::new(tx.clone())).unwrap();
            assert_eq!(executed.outcome, TxOutcome::Success);
            executed.gas_used
        })
        .collect();
    Block {
        chain,
        executor,
        attrs,
        txs,
        gas_used,
        forwarder,
        request,
        answer,
    }
}

impl Block {
    fn at(&self, index: usize) -> InBlock<'_> {
        InBlock {
            parent_state: Arc::new(self.chain.store.state().unwrap()),
            attrs: self.attrs.clone(),
            block_hash: B256::repeat_byte(1),
            transactions: &self.txs,
            index,
            results: self.executor.inference_provider().cloned(),
        }
    }
}

#[test]
fn a_block_transaction_is_traced_after_the_ones_ahead_of_it() {
    let b = block();
    let trace = b
        .executor
        .trace_transaction(b.at(1), opts(serde_json::json!({"tracer": "callTracer"})))
        .unwrap();
    let GethTrace::CallTracer(frame) = trace else {
        panic!("not a call trace: {trace:?}")
    };
    // The forwarder exists (its deployment ran first) and the transaction used what the
    // block charged it.
    assert_eq!(frame.to, Some(b.forwarder));
    assert_eq!(frame.gas_used, U256::from(b.gas_used[1]));
    assert_eq!(frame.gas, U256::from(b.txs[1].tx.gas_limit()));
    assert!(frame.error.is_none(), "{frame:?}");
    // The precompile's frame: the request in, the model's answer out.
    assert_eq!(frame.calls.len(), 1, "{frame:?}");
    let precompile = &frame.calls[0];
    assert_eq!(precompile.to, Some(INFERENCE_PRECOMPILE));
    assert_eq!(precompile.input, b.request);
    assert_eq!(precompile.output.as_ref(), Some(&b.answer));
    assert_eq!(frame.output.as_ref(), Some(&b.answer));

    // The struct logger (no tracer named): every opcode, and the gas of the receipt.
    let GethTrace::Default(logs) = b
        .executor
        .trace_transaction(b.at(1), GethDebugTracingOptions::default())
        .unwrap()
    else {
        panic!("not a struct log")
    };
    assert!(!logs.failed);
    assert_eq!(logs.gas, b.gas_used[1]);
    assert!(logs.struct_logs.iter().any(|l| l.op == "CALL"));
    assert_eq!(logs.return_value, b.answer);

    // The prestate tracer sees the forwarder's code, deployed ahead in the same block.
    let GethTrace::PreStateTracer(prestate) = b
        .executor
        .trace_transaction(
            b.at(1),
            opts(serde_json::json!({"tracer": "prestateTracer"})),
        )
        .unwrap()
    else {
        panic!("not a prestate trace")
    };
    let json = serde_json::to_value(&prestate).unwrap();
    let code = &json[format!("{:#x}", b.forwarder)]["code"];
    assert_eq!(
        code.as_str(),
        Some(format!("0x{}", alloy_primitives::hex::encode(FORWARD_RUNTIME)).as_str())
    );
}

#[test]
fn a_whole_block_is_traced_in_order() {
    let b = block();
    let traces = b
        .executor
        .trace_block(b.at(0), opts(serde_json::json!({"tracer": "callTracer"})))
        .unwrap();
    let hashes: Vec<B256> = traces.iter().map(|(h, _)| *h).collect();
    assert_eq!(hashes, b.txs.iter().map(|t| t.hash).collect::<Vec<_>>());
    for ((_, trace), gas) in traces.iter().zip(&b.gas_used) {
        let GethTrace::CallTracer(frame) = trace else {
            panic!("not a call trace")
        };
        assert_eq!(frame.gas_used, U256::from(*gas));
    }
}

#[test]
fn an_unknown_tracer_is_the_callers_error() {
    let b = block();
    let err = b
        .executor
        .trace_transaction(b.at(1), opts(serde_json::json!({"tracer": "noSuchTracer"})))
        .unwrap_err();
    assert!(matches!(err, TraceError::Tracer(_)), "{err:?}");
}

#[test]
fn a_call_is_traced_as_eth_call_runs_it() {
    let b = block();
    // On the parent state the forwarder does not exist yet: trace a direct request.
    let request = CallRequest {
        tx: TransactionRequest::default()
            .to(INFERENCE_PRECOMPILE)
            .input(b.request.clone().into()),
        overrides: None,
    };
    let view = Arc::new(b.chain.store.state().unwrap());
    let called = b
        .executor
        .call(view.clone(), &b.attrs, request.clone())
        .unwrap();
    let GethTrace::CallTracer(frame) = b
        .executor
        .trace_call(
            view,
            &b.attrs,
            request,
            opts(serde_json::json!({"tracer": "callTracer"})),
        )
        .unwrap()
    else {
        panic!("not a call trace")
    };
    assert_eq!(frame.to, Some(INFERENCE_PRECOMPILE));
    assert_eq!(frame.output, Some(called.output.clone()));
    assert_eq!(called.output, b.answer);
}

#[test]
fn an_access_list_names_the_slots_a_call_touches() {
    let s = TestChain::new(1);
    let f = s.factory(0);
    let attrs = s
        .executor
        .next_attributes(&s.genesis, 1_700_000_000_000, Address::ZERO);
    // The storage contract, overlaid on the state as `eth_createAccessList` allows.
    let store = Address::repeat_byte(0x55);
    let overrides = serde_json::from_value(serde_json::json!({
        format!("{store:#x}"): {"code": format!("0x{}", alloy_primitives::hex::encode(STORE_RUNTIME))}
    }))
    .unwrap();
    let request = CallRequest {
        tx: TransactionRequest::default()
            .from(f.address())
            .to(store)
            .input(store_call(9, U256::from(1)).into()),
        overrides: Some(overrides),
    };
    let view = Arc::new(s.store.state().unwrap());
    let (list, gas, error) = s
        .executor
        .create_access_list(view, &attrs, request)
        .unwrap();
    assert!(error.is_none(), "{error:?}");
    assert_eq!(list.0.len(), 1);
    assert_eq!(list.0[0].address, store);
    assert_eq!(list.0[0].storage_keys, vec![B256::from(U256::from(9))]);
    assert!(gas > 21_000, "{gas}");
}

#[test]
fn every_builtin_tracer_answers() {
    let b = block();
    for opts_json in [
        serde_json::json!({"tracer": "4byteTracer"}),
        serde_json::json!({"tracer": "flatCallTracer"}),
        serde_json::json!({"tracer": "noopTracer"}),
        serde_json::json!({"tracer": "callTracer", "tracerConfig": {"onlyTopCall": true, "withLog": true}}),
        serde_json::json!({"tracer": "prestateTracer", "tracerConfig": {"diffMode": true}}),
        serde_json::json!({"tracer": "muxTracer", "tracerConfig": {"callTracer": {}, "4byteTracer": null}}),
    ] {
        let trace = b
            .executor
            .trace_transaction(b.at(1), opts(opts_json.clone()));
        assert!(trace.is_ok(), "{opts_json}: {trace:?}");
    }
}

/// A call that loops for all its gas (free to send, with state overrides) is traced with at
/// most the bounded number of steps recorded; a smaller `limit` is honoured.
#[test]
fn the_struct_logger_records_a_bounded_number_of_steps() {
    use pipe_executor::trace::{MAX_STEPS, MAX_STEPS_WITH_STACK};
    let s = TestChain::new(1);
    let attrs = s
        .executor
        .next_attributes(&s.genesis, 1_700_000_000_000, Address::ZERO);
    let looper = Address::repeat_byte(0x66);
    // JUMPDEST PUSH0 JUMP: forever, 11 gas a round.
    let overrides: alloy_rpc_types_eth::state::StateOverride =
        serde_json::from_value(serde_json::json!({
            format!("{looper:#x}"): {"code": "0x5b5f56"}
        }))
        .unwrap();
    let request = CallRequest {
        tx: TransactionRequest::default()
            .to(looper)
            .gas_limit(5_000_000),
        overrides: Some(overrides),
    };
    let view = Arc::new(s.store.state().unwrap());
    let steps = |json: serde_json::Value| {
        let trace = s
            .executor
            .trace_call(view.clone(), &attrs, request.clone(), opts(json))
            .unwrap();
        let GethTrace::Default(logs) = trace else {
            panic!("not a struct log")
        };
        assert!(logs.failed, "out of gas");
        logs.struct_logs.len() as u64
    };
    assert_eq!(steps(serde_json::json!({})), MAX_STEPS_WITH_STACK);
    assert_eq!(steps(serde_json::json!({"disableStack": true})), MAX_STEPS);
    assert_eq!(steps(serde_json::json!({"limit": 10})), 10);
    assert_eq!(
        steps(serde_json::json!({"limit": 10_000_000})),
        MAX_STEPS_WITH_STACK
    );
}
