//! The node driven by alloy's provider over HTTP on a loopback port.

mod common;

use alloy_consensus::proofs::calculate_transaction_root;
use alloy_network::{EthereumWallet, TransactionBuilder};
use alloy_primitives::{Address, B256, Bytes, U256, b256, hex};
use alloy_provider::{Provider, ProviderBuilder};
use alloy_rpc_types_eth::{BlockNumberOrTag, Filter, TransactionRequest};
use alloy_signer_local::PrivateKeySigner;

/// Topic the test contract logs under.
const TOPIC: B256 = b256!("0x00000000000000000000000000000000000000000000000000000000000000aa");

/// Runtime: `sstore(0, calldataload(0)); log1(mem[0..32] = calldataload(0), TOPIC)`.
fn runtime() -> Vec<u8> {
    // PUSH1 0 CALLDATALOAD DUP1 PUSH1 0 SSTORE PUSH1 0 MSTORE PUSH32 <topic>
    let mut code = hex!("60003580600055600052").to_vec();
    code.push(0x7f);
    code.extend_from_slice(TOPIC.as_slice());
    code.extend_from_slice(&hex!("60206000a100"));
    code
}

/// Init code returning `runtime()`.
fn init_code() -> Vec<u8> {
    let rt = runtime();
    let len = rt.len() as u8;
    let mut code = vec![
        0x60, len, 0x60, 0x0c, 0x60, 0x00, 0x39, 0x60, len, 0x60, 0x00, 0xf3,
    ];
    code.extend(rt);
    code
}

/// A provider that signs with `signer`, on the node at `url`.
fn wallet_provider(url: &str, signer: PrivateKeySigner) -> impl Provider + use<> {
    ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url.parse().unwrap())
}

/// Sends `req` and waits for its receipt.
async fn mined(
    provider: &impl Provider,
    req: TransactionRequest,
) -> alloy_rpc_types_eth::TransactionReceipt {
    provider
        .send_transaction(req)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_of_every_type_contracts_logs_and_real_roots() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let signer: PrivateKeySigner = common::DEV_KEY_0.parse().unwrap();
    let me = signer.address();
    let provider = wallet_provider(&node.rpc_url(), signer);

    assert_eq!(provider.get_chain_id().await.unwrap(), 31337);
    let accounts = provider.get_accounts().await.unwrap();
    assert_eq!(accounts.len(), 10);
    assert_eq!(accounts[0], me);

    let to = Address::repeat_byte(0x42);
    let gas_price = provider.get_gas_price().await.unwrap();
    // EIP-1559 (the provider's default), legacy (gas price only), EIP-2930 (access list).
    let requests = [
        TransactionRequest::default()
            .with_to(to)
            .with_value(U256::from(1)),
        TransactionRequest::default()
            .with_to(to)
            .with_value(U256::from(2))
            .with_gas_price(gas_price),
        TransactionRequest::default()
            .with_to(to)
            .with_value(U256::from(3))
            .with_gas_price(gas_price)
            .with_access_list(Default::default()),
    ];
    let mut types = Vec::new();
    for req in requests {
        let receipt = mined(&provider, req).await;
        assert!(receipt.status());
        assert_eq!(receipt.gas_used, 21_000);
        assert_eq!(receipt.from, me);
        types.push(receipt.transaction_type() as u8);
    }
    assert_eq!(types, vec![2, 0, 1]);
    assert_eq!(provider.get_balance(to).await.unwrap(), U256::from(6));
    assert_eq!(provider.get_transaction_count(me).await.unwrap(), 3);

    // Deploy, call, read storage and logs.
    let receipt = mined(
        &provider,
        TransactionRequest::default().with_deploy_code(Bytes::from(init_code())),
    )
    .await;
    assert!(receipt.status());
    let contract = receipt.contract_address.expect("contract address");
    assert_eq!(contract, me.create(3));
    assert_eq!(
        provider.get_code_at(contract).await.unwrap(),
        Bytes::from(runtime())
    );
    let value = U256::from(0x1234_5678u64);
    let receipt = mined(
        &provider,
        TransactionRequest::default()
            .with_to(contract)
            .with_input(Bytes::from(value.to_be_bytes::<32>().to_vec())),
    )
    .await;
    assert!(receipt.status());
    assert_eq!(
        provider.get_storage_at(contract, U256::ZERO).await.unwrap(),
        value
    );
    let logs = provider
        .get_logs(
            &Filter::new()
                .from_block(0)
                .address(contract)
                .event_signature(TOPIC),
        )
        .await
        .unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].data().data.as_ref(), &value.to_be_bytes::<32>());
    assert_eq!(logs[0].transaction_hash, Some(receipt.transaction_hash));
    // A topic no one logged finds nothing.
    let none = provider
        .get_logs(
            &Filter::new()
                .from_block(0)
                .event_signature(B256::repeat_byte(1)),
        )
        .await
        .unwrap();
    assert!(none.is_empty());

    // Headers hash to their hash; the transactions root is the real MPT root.
    let head = provider.get_block_number().await.unwrap();
    for n in 0..=head {
        let block = provider
            .get_block_by_number(BlockNumberOrTag::Number(n))
            .full()
            .await
            .unwrap()
            .expect("block exists");
        assert_eq!(
            block.header.inner.hash_slow(),
            block.header.hash,
            "block {n}"
        );
        let txs: Vec<_> = block
            .transactions
            .txns()
            .map(|t| t.inner.inner().clone())
            .collect();
        assert_eq!(
            calculate_transaction_root(&txs),
            block.header.transactions_root,
            "block {n}"
        );
        if n > 0 {
            let parent = provider
                .get_block_by_number(BlockNumberOrTag::Number(n - 1))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(block.header.parent_hash, parent.header.hash);
        }
    }
    // eth_getProof: the contract's account and its slot, and an absent account, proved against
    // the head's state root, and the contract's slot before the call set it.
    let head = provider
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap();
    let proof = provider
        .get_proof(contract, vec![B256::ZERO, B256::with_last_byte(9)])
        .await
        .unwrap();
    verify_account(head.header.state_root, &proof);
    assert_eq!(proof.storage_proof[0].value, value);
    assert_eq!(proof.storage_proof[1].value, U256::ZERO);
    let absent = provider
        .get_proof(Address::repeat_byte(0x77), vec![])
        .await
        .unwrap();
    verify_account(head.header.state_root, &absent);
    assert_eq!(absent.nonce, 0);
    let before = head.header.number - 1;
    let parent = provider
        .get_block_by_number(BlockNumberOrTag::Number(before))
        .await
        .unwrap()
        .unwrap();
    let old = provider
        .get_proof(contract, vec![B256::ZERO])
        .number(before)
        .await
        .unwrap();
    verify_account(parent.header.state_root, &old);
    assert_eq!(old.storage_proof[0].value, U256::ZERO);

    // The store agrees with itself: the head's state root recomputed from scratch.
    let (computed, header) = node.store.verify_state_root().unwrap();
    assert_eq!(computed, header);
    node.shutdown().await;
}

/// Checks an `eth_getProof` answer against `state_root` with alloy-trie: the account (or its
/// absence) in the account trie, each slot (or its absence) in the storage trie.
fn verify_account(state_root: B256, p: &alloy_rpc_types_eth::EIP1186AccountProofResponse) {
    use alloy_trie::{Nibbles, TrieAccount, proof::verify_proof};
    let exists = !p.is_empty();
    let leaf = exists.then(|| {
        alloy_rlp::encode(TrieAccount {
            nonce: p.nonce,
            balance: p.balance,
            storage_root: p.storage_hash,
            code_hash: p.code_hash,
        })
    });
    verify_proof(
        state_root,
        Nibbles::unpack(alloy_primitives::keccak256(p.address)),
        leaf,
        &p.account_proof,
    )
    .expect("account proof");
    for s in &p.storage_proof {
        let value = (!s.value.is_zero()).then(|| alloy_rlp::encode(s.value));
        verify_proof(
            p.storage_hash,
            Nibbles::unpack(alloy_primitives::keccak256(s.key.as_b256())),
            value,
            &s.proof,
        )
        .expect("storage proof");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let signer: PrivateKeySigner = common::DEV_KEY_0.parse().unwrap();
    let node = common::dev_node(dir.path()).await;
    let provider = wallet_provider(&node.rpc_url(), signer.clone());
    let receipt = mined(
        &provider,
        TransactionRequest::default()
            .with_to(Address::repeat_byte(1))
            .with_value(U256::from(7)),
    )
    .await;
    let head = provider.get_block_number().await.unwrap();
    node.shutdown().await;

    let node = common::dev_node(dir.path()).await;
    let provider = wallet_provider(&node.rpc_url(), signer);
    assert_eq!(provider.get_block_number().await.unwrap(), head);
    let again = provider
        .get_transaction_receipt(receipt.transaction_hash)
        .await
        .unwrap()
        .expect("receipt survives restart");
    assert_eq!(again.block_hash, receipt.block_hash);
    let next = mined(
        &provider,
        TransactionRequest::default()
            .with_to(Address::repeat_byte(1))
            .with_value(U256::from(7)),
    )
    .await;
    assert_eq!(next.block_number, Some(head + 1));
    assert_eq!(
        provider.get_balance(Address::repeat_byte(1)).await.unwrap(),
        U256::from(14)
    );
    node.shutdown().await;
}

/// Archive mode (the dev chain's default): balances, nonces, calls and traces at blocks far
/// older than the 128 recent snapshots, before and after a restart (when no snapshot is left);
/// a proof of such a block is refused with the reason (the tries are not archived).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_serves_old_state_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let signer: PrivateKeySigner = common::DEV_KEY_0.parse().unwrap();
    let me = signer.address();
    let to = Address::repeat_byte(0x31);
    let node = common::dev_node(dir.path()).await;
    let url = node.rpc_url();
    let provider = wallet_provider(&url, signer.clone());
    let first = mined(
        &provider,
        TransactionRequest::default()
            .with_to(to)
            .with_value(U256::from(5)),
    )
    .await;
    let b1 = first.block_number.unwrap();
    let r = common::rpc(&url, "anvil_mine", serde_json::json!(["0xc8"])).await;
    assert!(r["error"].is_null(), "{r}");
    mined(
        &provider,
        TransactionRequest::default()
            .with_to(to)
            .with_value(U256::from(7)),
    )
    .await;
    let head = provider.get_block_number().await.unwrap();
    assert!(head > b1 + 200);

    let check = |url: String| async move {
        let provider = ProviderBuilder::new().connect_http(url.parse().unwrap());
        assert_eq!(
            provider.get_balance(to).number(b1).await.unwrap(),
            U256::from(5)
        );
        assert_eq!(
            provider.get_balance(to).number(b1 - 1).await.unwrap(),
            U256::ZERO
        );
        assert_eq!(provider.get_balance(to).await.unwrap(), U256::from(12));
        assert_eq!(
            provider.get_transaction_count(me).number(b1).await.unwrap(),
            1
        );
        // A call at the old block sees the old state (the balance through BALANCE).
        let balance_of = Bytes::from(
            [
                &hex!("73")[..],
                to.as_slice(),
                &hex!("3160005260206000f3")[..],
            ]
            .concat(),
        );
        let out = provider
            .call(
                TransactionRequest::default()
                    .with_deploy_code(balance_of)
                    .from(me),
            )
            .block(b1.into())
            .await
            .unwrap();
        assert_eq!(U256::from_be_slice(&out), U256::from(5));
        // The first transaction traced on its parent's archived state.
        let trace = common::rpc(
            &url,
            "debug_traceTransaction",
            serde_json::json!([first.transaction_hash, {"tracer": "callTracer"}]),
        )
        .await;
        assert_eq!(trace["result"]["value"], "0x5", "{trace}");
        // Proofs at archived blocks: the tries rebuilt from the archive lead to each block's
        // header root. The EIP-2935 contract's slot for block b1 - 1 holds its hash from b1 on.
        for n in [b1 - 1, b1] {
            let header = provider
                .get_block_by_number(BlockNumberOrTag::Number(n))
                .await
                .unwrap()
                .unwrap()
                .header;
            let proof = provider.get_proof(to, vec![]).number(n).await.unwrap();
            verify_account(header.state_root, &proof);
            assert_eq!(proof.balance, U256::from(if n == b1 { 5 } else { 0 }));
            let history = alloy_eips::eip2935::HISTORY_STORAGE_ADDRESS;
            let slot = B256::from(U256::from((b1 - 1) % 8191));
            let proof = provider
                .get_proof(history, vec![slot])
                .number(n)
                .await
                .unwrap();
            verify_account(header.state_root, &proof);
            let parent_hash = provider
                .get_block_by_number(BlockNumberOrTag::Number(b1 - 1))
                .await
                .unwrap()
                .unwrap()
                .header
                .hash;
            let want = if n == b1 {
                U256::from_be_bytes(parent_hash.0)
            } else {
                U256::ZERO
            };
            assert_eq!(proof.storage_proof[0].value, want, "block {n}");
        }
    };
    check(url).await;
    node.shutdown().await;
    let node = common::dev_node(dir.path()).await;
    check(node.rpc_url()).await;
    node.shutdown().await;
}

/// `eth_subscribe("newHeads")` over WebSocket, through alloy's pubsub provider: every sealed
/// block arrives once, in order, with the header `eth_getBlockByNumber` serves (its hash
/// recomputed from the fields, so the pushed header is the real one); other kinds are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscribers_get_every_new_head() {
    use alloy_provider::WsConnect;
    use futures::StreamExt;

    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let ws_url = node.rpc_url().replacen("http://", "ws://", 1);
    let ws = ProviderBuilder::new()
        .connect_ws(WsConnect::new(ws_url))
        .await
        .unwrap();
    let mut heads = ws.subscribe_blocks().await.unwrap().into_stream();

    let signer: PrivateKeySigner = common::DEV_KEY_0.parse().unwrap();
    let provider = wallet_provider(&node.rpc_url(), signer);
    let start = provider.get_block_number().await.unwrap();
    for i in 1..=3u64 {
        // On-demand sealing: each transfer is its own block.
        let receipt = mined(
            &provider,
            TransactionRequest::default()
                .with_to(Address::repeat_byte(0x77))
                .with_value(U256::from(i)),
        )
        .await;
        let pushed = tokio::time::timeout(std::time::Duration::from_secs(30), heads.next())
            .await
            .expect("a head within 30 s")
            .expect("the subscription stays open");
        assert_eq!(pushed.number, start + i);
        assert_eq!(Some(pushed.number), receipt.block_number);
        assert_eq!(Some(pushed.hash), receipt.block_hash);
        assert_eq!(pushed.inner.hash_slow(), pushed.hash);
        let served = provider
            .get_block_by_number(BlockNumberOrTag::Number(pushed.number))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(served.header, pushed);
    }

    // The same socket answers ordinary calls, and refuses subscriptions it does not serve.
    assert_eq!(ws.get_block_number().await.unwrap(), start + 3);
    let refused = ws
        .client()
        .request::<_, String>("eth_subscribe", ("newFoo",))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("unsupported subscription"), "{refused}");
    node.shutdown().await;
}

/// The next item of `s`, within 30 s.
async fn next_of<T>(what: &str, s: &mut (impl futures::Stream<Item = T> + Unpin)) -> T {
    use futures::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(30), s.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: an item within 30 s"))
        .unwrap_or_else(|| panic!("{what}: the stream stays open"))
}

/// Polled filters and subscriptions, as alloy's `watch_*` and `subscribe_*` use them (ethers'
/// `contract.on` and viem's watchers do the same): new blocks, pending transactions and
/// matching logs, each once; filter ids are geth's shape; an uninstalled filter is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_subscriptions_see_blocks_pending_transactions_and_logs() {
    use alloy_provider::WsConnect;
    use futures::StreamExt;

    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let url = node.rpc_url();
    let signer: PrivateKeySigner = common::DEV_KEY_0.parse().unwrap();
    let provider = wallet_provider(&url, signer);
    let deployed = mined(
        &provider,
        TransactionRequest::default().with_deploy_code(Bytes::from(init_code())),
    )
    .await;
    let contract = deployed.contract_address.unwrap();

    // Polled filters, installed before anything happens.
    let mut blocks = provider
        .watch_blocks()
        .await
        .unwrap()
        .with_poll_interval(std::time::Duration::from_millis(50))
        .into_stream()
        .flat_map(futures::stream::iter);
    let mut pending = provider
        .watch_pending_transactions()
        .await
        .unwrap()
        .with_poll_interval(std::time::Duration::from_millis(50))
        .into_stream()
        .flat_map(futures::stream::iter);
    let filter = Filter::new().address(contract).event_signature(TOPIC);
    let mut logs = provider
        .watch_logs(&filter)
        .await
        .unwrap()
        .with_poll_interval(std::time::Duration::from_millis(50))
        .into_stream()
        .flat_map(futures::stream::iter);
    // And the same over WebSocket subscriptions.
    let ws = ProviderBuilder::new()
        .connect_ws(WsConnect::new(url.replacen("http://", "ws://", 1)))
        .await
        .unwrap();
    let mut ws_logs = ws.subscribe_logs(&filter).await.unwrap().into_stream();
    let mut ws_pending = ws
        .subscribe_pending_transactions()
        .await
        .unwrap()
        .into_stream();

    for value in [7u64, 8] {
        let receipt = mined(
            &provider,
            TransactionRequest::default()
                .with_to(contract)
                .with_input(Bytes::from(U256::from(value).to_be_bytes::<32>().to_vec())),
        )
        .await;
        let hash = receipt.transaction_hash;
        assert_eq!(next_of("pending filter", &mut pending).await, hash);
        assert_eq!(next_of("pending subscription", &mut ws_pending).await, hash);
        assert_eq!(
            Some(next_of("block filter", &mut blocks).await),
            receipt.block_hash
        );
        for log in [
            next_of("log filter", &mut logs).await,
            next_of("log subscription", &mut ws_logs).await,
        ] {
            assert_eq!(log.transaction_hash, Some(hash));
            assert_eq!(
                log.data().data.as_ref(),
                &U256::from(value).to_be_bytes::<32>()
            );
        }
    }

    // Raw: ids are geth's shape; getFilterLogs sees the whole range; uninstall ends it.
    let id = common::rpc(
        &url,
        "eth_newFilter",
        serde_json::json!([{"fromBlock": "0x0", "address": contract}]),
    )
    .await["result"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        id.starts_with("0x") && id.len() <= 34 && !id.starts_with("0x0"),
        "{id}"
    );
    let all = common::rpc(&url, "eth_getFilterLogs", serde_json::json!([id])).await;
    assert_eq!(all["result"].as_array().unwrap().len(), 2, "{all}");
    let changes = common::rpc(&url, "eth_getFilterChanges", serde_json::json!([id])).await;
    assert_eq!(
        changes["result"],
        serde_json::json!([]),
        "nothing new: {changes}"
    );
    assert_eq!(
        common::rpc(&url, "eth_uninstallFilter", serde_json::json!([id])).await["result"],
        serde_json::json!(true)
    );
    let gone = common::rpc(&url, "eth_getFilterChanges", serde_json::json!([id])).await;
    assert_eq!(gone["error"]["message"], "filter not found", "{gone}");
    node.shutdown().await;
}

/// The dev accounts are unlocked, as on anvil: a provider with no wallet sends through
/// `eth_sendTransaction` (nonce, gas and fees filled in), `eth_signTransaction` signs without
/// sending, `eth_sign` and `personal_sign` sign EIP-191 messages; other accounts are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_accounts_are_unlocked() {
    use alloy_eips::Decodable2718;
    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let url = node.rpc_url();
    let plain = ProviderBuilder::new().connect_http(url.parse().unwrap());
    let from = node.dev_keys[1].address();
    let to = Address::repeat_byte(0x33);

    // Two in a row, nothing but from, to and value: the nonces follow each other.
    for value in [5u64, 6] {
        let receipt = plain
            .send_transaction(
                TransactionRequest::default()
                    .from(from)
                    .to(to)
                    .value(U256::from(value)),
            )
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status());
        assert_eq!(receipt.from, from);
    }
    assert_eq!(plain.get_balance(to).await.unwrap(), U256::from(11));
    assert_eq!(plain.get_transaction_count(from).await.unwrap(), 2);
    // The worker registry sits at 0x…F6; 0x…F5 (OpenGradient's price history) is left free.
    assert!(
        plain
            .get_code_at(Address::with_last_byte(0xF5))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        plain
            .get_code_at(Address::with_last_byte(0xF6))
            .await
            .unwrap(),
        *pipe_executor::attest::WORKER_REGISTRY_CODE
    );

    // Signed, not sent: valid raw bytes from `from`, which the node then takes.
    let raw: Bytes = plain
        .client()
        .request(
            "eth_signTransaction",
            (TransactionRequest::default()
                .from(from)
                .to(to)
                .value(U256::from(1)),),
        )
        .await
        .unwrap();
    let tx = alloy_consensus::TxEnvelope::decode_2718(&mut raw.as_ref()).unwrap();
    assert_eq!(
        alloy_consensus::transaction::SignerRecoverable::recover_signer(&tx).unwrap(),
        from
    );
    assert_eq!(
        plain.get_transaction_count(from).await.unwrap(),
        2,
        "not sent"
    );
    plain
        .send_raw_transaction(&raw)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();

    // Messages: EIP-191, recoverable to the account; personal_sign takes them the other way.
    let message = Bytes::from_static(b"hello pipe");
    let signature: Bytes = plain
        .client()
        .request("eth_sign", (from, message.clone()))
        .await
        .unwrap();
    let personal: Bytes = plain
        .client()
        .request("personal_sign", (message.clone(), from))
        .await
        .unwrap();
    assert_eq!(signature, personal);
    let sig = alloy_primitives::Signature::try_from(signature.as_ref()).unwrap();
    assert_eq!(sig.recover_address_from_msg(&message).unwrap(), from);

    // Not a dev account: geth's refusal.
    let stranger = Address::repeat_byte(0x44);
    let err = plain
        .send_transaction(TransactionRequest::default().from(stranger).to(to))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown account"), "{err}");
    node.shutdown().await;
}

/// Mining and the clock on the dev chain, as anvil and hardhat name them: `evm_mine` seals one
/// block now (answering "0x0" as anvil), at a timestamp if given; `anvil_mine` and
/// `hardhat_mine` seal as many as asked, with a ready transaction included in the first and an
/// interval between their timestamps if given; `evm_increaseTime` and
/// `evm_setNextBlockTimestamp` move the clock forward (never back); automine and interval
/// mining switch how blocks are sealed. Every block is an ordinary block: replay verifies them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evm_mine_and_anvil_mine_seal_blocks_now() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    // Slots far apart: only mining makes blocks during the test.
    config.block_time =
        pipe_node::config::BlockTime::Interval(std::time::Duration::from_secs(3600));
    let node = pipe_node::node::launch(config, std::sync::Arc::new(pipe_primitives::SystemClock))
        .await
        .unwrap();
    let url = node.rpc_url();
    let number = || async {
        common::quantity(
            &common::rpc(&url, "eth_blockNumber", serde_json::json!([])).await["result"],
        )
    };
    let start = number().await;
    let r = common::rpc(&url, "evm_mine", serde_json::json!([])).await;
    assert_eq!(r["result"], "0x0", "{r}");
    assert_eq!(number().await, start + 1);

    let to = Address::repeat_byte(0x55);
    let hash = common::rpc(
        &url,
        "eth_sendTransaction",
        serde_json::json!([{"from": node.dev_keys[0].address(), "to": to, "value": "0x7"}]),
    )
    .await["result"]
        .clone();
    assert!(hash.is_string(), "{hash}");
    let r = common::rpc(&url, "anvil_mine", serde_json::json!(["0x3"])).await;
    assert!(r["error"].is_null(), "{r}");
    assert_eq!(number().await, start + 4);
    let receipt = common::rpc(&url, "eth_getTransactionReceipt", serde_json::json!([hash])).await;
    let status = common::rpc(&url, "pipe_getTransactionStatus", serde_json::json!([hash])).await;
    assert_eq!(receipt["result"]["status"], "0x1", "{receipt} {status}");
    let r = common::rpc(&url, "hardhat_mine", serde_json::json!([])).await;
    assert!(r["error"].is_null(), "{r}");
    assert_eq!(number().await, start + 5);

    let block = |n: &'static str| {
        let url = url.clone();
        async move {
            common::rpc(&url, "eth_getBlockByNumber", serde_json::json!([n, false])).await["result"]
                .clone()
        }
    };
    let ts = |b: &serde_json::Value| common::quantity(&b["timestamp"]);

    // The clock: forward by an hour, then to a chosen second, never back.
    // Blocks mined back to back run ahead of the wall clock (a second each at least), so the
    // hour is counted from the clock.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let offset = common::rpc(&url, "evm_increaseTime", serde_json::json!([3600])).await;
    assert!(offset["result"].as_i64().unwrap() >= 3600, "{offset}");
    common::rpc(&url, "evm_mine", serde_json::json!([])).await;
    let after = ts(&block("latest").await);
    assert!(after >= before + 3600, "{before} -> {after}");
    let chosen = after + 100_000;
    let r = common::rpc(
        &url,
        "evm_setNextBlockTimestamp",
        serde_json::json!([format!("{chosen:#x}")]),
    )
    .await;
    assert!(r["error"].is_null(), "{r}");
    common::rpc(&url, "evm_mine", serde_json::json!([])).await;
    assert_eq!(ts(&block("latest").await), chosen);
    let r = common::rpc(&url, "evm_setNextBlockTimestamp", serde_json::json!([5])).await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not after"),
        "{r}"
    );
    let r = common::rpc(&url, "evm_mine", serde_json::json!([chosen + 50])).await;
    assert_eq!(r["result"], "0x0", "{r}");
    assert_eq!(ts(&block("latest").await), chosen + 50);
    // Later blocks go on from the chosen time.
    common::rpc(&url, "evm_mine", serde_json::json!([])).await;
    assert!(ts(&block("latest").await) >= chosen + 51);
    // Two blocks twelve seconds apart.
    let r = common::rpc(&url, "anvil_mine", serde_json::json!(["0x2", "0xc"])).await;
    assert!(r["error"].is_null(), "{r}");
    let head = number().await;
    let first = ts(&common::rpc(
        &url,
        "eth_getBlockByNumber",
        serde_json::json!([format!("{:#x}", head - 1), false]),
    )
    .await["result"]);
    assert_eq!(ts(&block("latest").await), first + 12);
    let r = common::rpc(&url, "anvil_mine", serde_json::json!(["0x100000"])).await;
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most")),
        "{r}"
    );
    assert_eq!(number().await, head);

    // anvil_nodeInfo in anvil's shape.
    let info = common::rpc(&url, "anvil_nodeInfo", serde_json::json!([])).await["result"].clone();
    assert_eq!(
        common::quantity(&info["currentBlockNumber"]),
        head,
        "{info}"
    );
    assert_eq!(info["hardFork"], "Osaka");
    assert_eq!(info["environment"]["chainId"], 31337);

    // Automine: on, a transaction is mined without asking; off, it waits for evm_mine.
    let automine = |on: bool| {
        let url = url.clone();
        async move {
            common::rpc(&url, "anvil_setAutomine", serde_json::json!([on])).await;
            common::rpc(&url, "anvil_getAutomine", serde_json::json!([])).await["result"]
                .as_bool()
                .unwrap()
        }
    };
    assert!(!automine(false).await, "interval mining is not automine");
    assert!(automine(true).await);
    let send = || {
        let url = url.clone();
        let from = node.dev_keys[1].address();
        async move {
            common::rpc(
                &url,
                "eth_sendTransaction",
                serde_json::json!([{"from": from, "to": to, "value": "0x1"}]),
            )
            .await["result"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let hashes = [send().await];
    let mined =
        common::wait_receipts(&url, &hashes, 40, std::time::Duration::from_millis(100)).await;
    assert!(mined[0].is_some(), "automine mines it");
    assert!(!automine(false).await);
    let waiting = [send().await];
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        common::receipts(&url, &waiting).await[0].is_none(),
        "automine off: not mined"
    );
    common::rpc(&url, "evm_mine", serde_json::json!([])).await;
    assert!(common::receipts(&url, &waiting).await[0].is_some());

    // Interval mining: a block a second, until turned off.
    let at = number().await;
    common::rpc(&url, "anvil_setIntervalMining", serde_json::json!([1])).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while number().await < at + 2 {
        assert!(std::time::Instant::now() < deadline, "no interval blocks");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    common::rpc(&url, "anvil_setIntervalMining", serde_json::json!([0])).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stopped = number().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(number().await, stopped, "interval mining off");
    let last = number().await;
    node.shutdown().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(["replay", "--dev", "--datadir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["blocks"].as_u64().unwrap(), last, "{report}");
}

/// State edits through JSON-RPC (`anvil_setBalance`, `anvil_setCode`, `anvil_setStorageAt`,
/// `anvil_setNonce`, `evm_snapshot` / `evm_revert`, `anvil_dumpState` / `anvil_loadState`,
/// `anvil_reset`) take effect when the call returns, with automine off too; each is a block
/// that a follower replays to the same state root, and `pipe replay` verifies the whole chain.
/// Off the dev chain they are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_edits_are_blocks_a_follower_and_replay_verify() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let url = node.rpc_url();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut fc = common::test_config(follower_dir.path());
    fc.follow = Some(url.clone());
    fc.follow_interval = std::time::Duration::from_millis(50);
    let follower = pipe_node::node::launch(fc, std::sync::Arc::new(pipe_primitives::SystemClock))
        .await
        .unwrap();
    let call = |method: &'static str, params: serde_json::Value| {
        let url = url.clone();
        async move {
            let r = common::rpc(&url, method, params).await;
            assert!(r["error"].is_null(), "{method}: {r}");
            r["result"].clone()
        }
    };
    let x = Address::repeat_byte(0xc0);
    let a1 = node.dev_keys[1].address();
    // Automine off: edits still land at once.
    call("evm_setAutomine", serde_json::json!([false])).await;
    let start = common::quantity(&call("eth_blockNumber", serde_json::json!([])).await);
    call(
        "anvil_setBalance",
        serde_json::json!([x, "0xde0b6b3a7640000"]),
    )
    .await;
    call(
        "anvil_setCode",
        serde_json::json!([x, Bytes::from(runtime())]),
    )
    .await;
    assert_eq!(
        call(
            "anvil_setStorageAt",
            serde_json::json!([x, "0x0", B256::with_last_byte(9)])
        )
        .await,
        true
    );
    call("hardhat_setNonce", serde_json::json!([a1, "0x20"])).await;
    assert_eq!(
        common::quantity(&call("eth_blockNumber", serde_json::json!([])).await),
        start + 4,
        "one block per edit"
    );
    assert_eq!(
        call("eth_getBalance", serde_json::json!([x, "latest"])).await,
        "0xde0b6b3a7640000"
    );
    assert_eq!(
        call("eth_getCode", serde_json::json!([x, "latest"])).await,
        serde_json::json!(Bytes::from(runtime()))
    );
    assert_eq!(
        call("eth_getStorageAt", serde_json::json!([x, "0x0", "latest"])).await,
        serde_json::json!(B256::with_last_byte(9))
    );
    assert_eq!(
        call(
            "eth_getTransactionCount",
            serde_json::json!([a1, "pending"])
        )
        .await,
        "0x20"
    );
    // The block says what it applied; the block before still reads the old value (archive).
    assert_eq!(
        call(
            "eth_getBalance",
            serde_json::json!([x, format!("{:#x}", start)])
        )
        .await,
        "0x0"
    );

    call("evm_setAutomine", serde_json::json!([true])).await;
    let snapshot = call("evm_snapshot", serde_json::json!([])).await;
    let provider = wallet_provider(&url, node.dev_keys[0].clone());
    mined(
        &provider,
        TransactionRequest::default()
            .with_to(x)
            .with_input(B256::with_last_byte(0x77).to_vec()),
    )
    .await;
    assert_eq!(
        call("eth_getStorageAt", serde_json::json!([x, "0x0", "latest"])).await,
        serde_json::json!(B256::with_last_byte(0x77))
    );
    assert_eq!(
        call("evm_revert", serde_json::json!([snapshot])).await,
        true
    );
    assert_eq!(
        call("evm_revert", serde_json::json!([snapshot])).await,
        false
    );
    assert_eq!(
        call("eth_getStorageAt", serde_json::json!([x, "0x0", "latest"])).await,
        serde_json::json!(B256::with_last_byte(9))
    );
    let a0 = node.dev_keys[0].address();
    assert_eq!(
        call(
            "eth_getTransactionCount",
            serde_json::json!([a0, "pending"])
        )
        .await,
        "0x0",
        "the reverted transaction's nonce is free again"
    );

    // An impersonated address sends without a key; the block lists it; stopping refuses it.
    let to = Address::repeat_byte(0x7a);
    call("anvil_impersonateAccount", serde_json::json!([x])).await;
    let hash = call(
        "eth_sendTransaction",
        serde_json::json!([{"from": x, "to": to, "value": "0x5"}]),
    )
    .await;
    let receipt = common::wait_receipts(
        &url,
        &[hash.as_str().unwrap().to_string()],
        100,
        std::time::Duration::from_millis(50),
    )
    .await[0]
        .clone()
        .expect("mined");
    assert_eq!(receipt["status"], "0x1");
    assert_eq!(receipt["from"], serde_json::json!(x));
    assert_eq!(
        call("eth_getBalance", serde_json::json!([to, "latest"])).await,
        "0x5"
    );
    let block = node
        .store
        .block(common::quantity(&receipt["blockNumber"]))
        .unwrap()
        .unwrap();
    assert_eq!(
        block
            .edits
            .impersonated(&hash.as_str().unwrap().parse().unwrap()),
        Some(x)
    );
    call("anvil_stopImpersonatingAccount", serde_json::json!([x])).await;
    let refused = common::rpc(
        &url,
        "eth_sendTransaction",
        serde_json::json!([{"from": x, "to": to, "value": "0x5"}]),
    )
    .await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown account"),
        "{refused}"
    );

    // A dump loads into another dev chain.
    let dump = call("anvil_dumpState", serde_json::json!([])).await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = common::dev_node(other_dir.path()).await;
    let r = common::rpc(
        &other.rpc_url(),
        "anvil_loadState",
        serde_json::json!([dump]),
    )
    .await;
    assert_eq!(r["result"], true, "{r}");
    for (method, params) in [
        ("eth_getCode", serde_json::json!([x, "latest"])),
        ("eth_getStorageAt", serde_json::json!([x, "0x0", "latest"])),
        ("eth_getTransactionCount", serde_json::json!([a1, "latest"])),
        ("eth_getBalance", serde_json::json!([x, "latest"])),
    ] {
        assert_eq!(
            common::rpc(&other.rpc_url(), method, params.clone()).await["result"],
            call(method, params).await,
            "{method}"
        );
    }
    other.shutdown().await;

    call("anvil_reset", serde_json::json!([])).await;
    assert_eq!(
        call("eth_getCode", serde_json::json!([x, "latest"])).await,
        "0x"
    );
    assert_eq!(
        call("eth_getTransactionCount", serde_json::json!([a1, "latest"])).await,
        "0x0"
    );

    // The follower replays every edit block to the same roots.
    let last = common::quantity(&call("eth_blockNumber", serde_json::json!([])).await);
    let following = follower.follower.as_ref().unwrap();
    for _ in 0..400 {
        if following.status().imported >= last {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = following.status();
    assert!(status.imported >= last, "{status:?}");
    for n in 0..=last {
        assert_eq!(
            node.store.block(n).unwrap().unwrap().hash,
            follower.store.block(n).unwrap().unwrap().hash,
            "block {n}"
        );
    }
    // Off the dev chain (a follower), edits are refused.
    let refused = common::rpc(
        &follower.rpc_url(),
        "anvil_setBalance",
        serde_json::json!([x, "0x1"]),
    )
    .await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("dev chain only"),
        "{refused}"
    );
    follower.shutdown().await;
    node.shutdown().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(["replay", "--dev", "--datadir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["blocks"].as_u64().unwrap(), last, "{report}");
}
