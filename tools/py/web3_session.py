"""web3.py against a pipe node, as its tutorials use it: the node's unlocked default account
sends with `.transact()` (no key in the client), events are read through `create_filter`,
blocks through a block filter, and EIP-712 data is signed by the node.

    tools/py/.venv/bin/python tools/py/web3_session.py http://127.0.0.1:8545

Exits non-zero at the first failed check; prints "web3.py: all N checks passed" otherwise.
"""

import json
import pathlib
import sys

from eth_account.messages import encode_typed_data
from eth_account import Account
from web3 import Web3

ROOT = pathlib.Path(__file__).resolve().parents[2]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1
    print(f"ok   {what}")


def main(url):
    w3 = Web3(Web3.HTTPProvider(url))
    check(w3.is_connected(), "connected")
    accounts = w3.eth.accounts
    check(len(accounts) >= 2, f"{len(accounts)} unlocked dev accounts")
    w3.eth.default_account = accounts[0]

    artifact = json.loads((ROOT / "contracts/out/Counter.json").read_text())
    Counter = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = Counter.constructor().transact()
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30)
    check(receipt.status == 1 and receipt.contractAddress, "constructor().transact() deployed Counter")
    counter = w3.eth.contract(address=receipt.contractAddress, abi=artifact["abi"])
    deployed_at = receipt.blockNumber

    events = counter.events.Incremented.create_filter(from_block="latest")
    blocks = w3.eth.filter("latest")
    for _ in range(2):
        tx = counter.functions.increment().transact()
        receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30)
        check(receipt.status == 1, "increment().transact() mined")
    check(counter.functions.get().call() == 2, "get() after two increments is 2")

    entries = events.get_new_entries()
    check(len(entries) == 2, f"create_filter saw {len(entries)} Incremented events")
    check(
        [e.args.newValue for e in entries] == [1, 2] and all(e.args.by == accounts[0] for e in entries),
        "the events' arguments decode",
    )
    check(events.get_new_entries() == [], "a filter polled again has nothing new")
    # eth_getFilterLogs resolves "latest" when asked, as geth does: a range from the deploy.
    ranged = counter.events.Incremented.create_filter(from_block=deployed_at)
    check(len(ranged.get_all_entries()) == 2, "get_all_entries from the deploy block returns both")
    new_blocks = blocks.get_new_entries()
    check(len(new_blocks) >= 2, f"the block filter saw {len(new_blocks)} new blocks")
    check(w3.eth.uninstall_filter(events.filter_id), "uninstall_filter")

    # A plain transfer from the second unlocked account, fees filled in by the node.
    before = w3.eth.get_balance(accounts[1])
    tx = w3.eth.send_transaction({"from": accounts[1], "to": accounts[0], "value": 12345})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30)
    spent = before - w3.eth.get_balance(accounts[1])
    check(spent == 12345 + receipt.gasUsed * receipt.effectiveGasPrice, "send_transaction value plus fees")

    # EIP-712 through the node, recovered locally to the account.
    typed = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "chainId", "type": "uint256"},
            ],
            "Vote": [{"name": "proposal", "type": "uint256"}, {"name": "support", "type": "bool"}],
        },
        "primaryType": "Vote",
        "domain": {"name": "pipe", "chainId": w3.eth.chain_id},
        "message": {"proposal": 7, "support": True},
    }
    signature = w3.eth.sign_typed_data(accounts[0], typed)
    signer = Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
    check(signer == accounts[0], "eth_signTypedData_v4 recovers to the account")

    print(f"web3.py: all {checks} checks passed")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8545")
