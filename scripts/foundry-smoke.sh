#!/usr/bin/env bash
# foundry-smoke.sh RPC_URL — end-to-end Foundry (forge/cast) session against any node.
#
# Deploys Counter (forge create) and TestToken, increments, sets, transfers tokens,
# checks cast call / receipt / logs / balance / block, a require() revert (eth_call,
# eth_estimateGas and a mined status-0 tx), a custom-error revert, and a raw
# `cast send --create` deployment. Exits nonzero on the first failure, printing
# the failing command and its output.
#
# Env:
#   PRIVATE_KEY  funded key (default: anvil/hardhat dev key #0)
#   RECIPIENT    address that receives tokens/ether (default: dev account #1)
#   CAST_EXTRA   extra args for every tx-sending command, e.g. "--legacy"
#   FOUNDRY_BIN  dir holding forge+cast (default: tools/js/node_modules/@foundry-rs/*-linux-amd64/bin)
#   CMD_TIMEOUT  per-command timeout in seconds (default 120)
# Needs: node, and `npm ci` done in tools/js (solcjs + foundry binaries).
set -uo pipefail

RPC_URL="${1:-}"
if [[ -z "$RPC_URL" ]]; then
  echo "usage: $0 RPC_URL" >&2
  exit 2
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NM="$REPO/tools/js/node_modules/@foundry-rs"
if [[ -n "${FOUNDRY_BIN:-}" ]]; then
  FORGE="$FOUNDRY_BIN/forge"; CAST="$FOUNDRY_BIN/cast"
else
  FORGE="$NM/forge-linux-amd64/bin/forge"; CAST="$NM/cast-linux-amd64/bin/cast"
fi
PK="${PRIVATE_KEY:-0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80}"
RECIPIENT="${RECIPIENT:-0x70997970C51812dc3A010C7d01b50e0d17dc79C8}"
TO="${CMD_TIMEOUT:-120}"
read -r -a EXTRA <<<"${CAST_EXTRA:-}"

for b in "$FORGE" "$CAST"; do
  [[ -x "$b" ]] || { echo "FAIL: $b not found/executable (run 'npm ci' in tools/js)" >&2; exit 2; }
done
command -v node >/dev/null || { echo "FAIL: node not on PATH" >&2; exit 2; }

PASS=0
OUT=""
fail() {
  echo "FAIL: $1" >&2
  [[ -n "${2:-}" ]] && printf '%s\n' "$2" | sed 's/^/    | /' >&2
  echo "foundry-smoke: FAILED after $PASS passing checks (rpc $RPC_URL)" >&2
  exit 1
}
ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
# run DESC CMD... : runs CMD with timeout, stores its stdout in $OUT (stderr apart: cast may log
# a poller error there while succeeding, which must not end up in JSON we parse), fails on
# nonzero exit showing both.
ERRF="$(mktemp)"; trap 'rm -f "$ERRF"' EXIT
run() {
  local desc="$1"; shift
  OUT="$(timeout "$TO" "$@" 2>"$ERRF")"
  local rc=$?
  [[ $rc -eq 0 ]] || fail "$desc (exit $rc): $*" "$OUT$(cat "$ERRF")"
}
# run_fails DESC NEEDLE CMD... : CMD must exit nonzero and its output must contain NEEDLE.
run_fails() {
  local desc="$1" needle="$2"; shift 2
  OUT="$(timeout "$TO" "$@" 2>&1)"
  local rc=$?
  [[ $rc -ne 0 ]] || fail "$desc: expected failure but command succeeded: $*" "$OUT"
  [[ $rc -ne 124 ]] || fail "$desc: timed out: $*" "$OUT"
  grep -qF -- "$needle" <<<"$OUT" || fail "$desc: output lacks '$needle': $*" "$OUT"
}
# jget JSON EXPR : evaluate JS expression EXPR on parsed JSON `j`.
jget() { node -e 'const j=JSON.parse(process.argv[1]); const v=eval(process.argv[2]); console.log(typeof v==="object"?JSON.stringify(v):v)' "$1" "$2"; }
# first token of a cast decoded value ("1000 [1e3]" -> "1000")
num() { awk '{print $1; exit}' <<<"$1"; }
expect_eq() { [[ "$2" == "$3" ]] || fail "$1: expected '$3', got '$2'"; ok "$1 = $3"; }

CASTTX=(--rpc-url "$RPC_URL" --private-key "$PK" "${EXTRA[@]}")
cd "$REPO/contracts" || fail "cd $REPO/contracts"

# --- chain basics -------------------------------------------------------------
run "cast chain-id" "$CAST" chain-id --rpc-url "$RPC_URL"; ok "chain-id $OUT"
run "cast block-number" "$CAST" block-number --rpc-url "$RPC_URL"; START_BLOCK="$OUT"; ok "block-number $START_BLOCK"
run "cast wallet address" "$CAST" wallet address --private-key "$PK"; ME="$OUT"
run "cast balance (deployer)" "$CAST" balance "$ME" --rpc-url "$RPC_URL"
[[ "$OUT" =~ ^[0-9]+$ && "$OUT" != "0" ]] || fail "deployer $ME has no balance" "$OUT"
ok "cast balance $ME = $OUT wei"

# --- deploy with forge create (offline solcjs via scripts/solc-wrapper) ---------
run "forge create Counter" "$FORGE" create test/Counter.sol:Counter "${CASTTX[@]}" --broadcast --json
CJSON="$(grep -A100 '^{' <<<"$OUT")"
COUNTER="$(jget "$CJSON" j.deployedTo)" || fail "parse forge create output" "$OUT"
[[ "$COUNTER" =~ ^0x[0-9a-fA-F]{40}$ ]] || fail "forge create Counter: no address" "$OUT"
ok "forge create Counter -> $COUNTER"
run "cast code Counter" "$CAST" code "$COUNTER" --rpc-url "$RPC_URL"
[[ ${#OUT} -gt 10 ]] || fail "no code at $COUNTER" "$OUT"; ok "cast code Counter (${#OUT} chars)"

run "forge create TestToken" "$FORGE" create test/TestToken.sol:TestToken "${CASTTX[@]}" --broadcast --json
TJSON="$(grep -A100 '^{' <<<"$OUT")"
TOKEN="$(jget "$TJSON" j.deployedTo)" || fail "parse forge create output" "$OUT"
[[ "$TOKEN" =~ ^0x[0-9a-fA-F]{40}$ ]] || fail "forge create TestToken: no address" "$OUT"
ok "forge create TestToken -> $TOKEN"

# --- Counter: send / call / receipt / logs --------------------------------------
run "cast call get() initial" "$CAST" call "$COUNTER" "get()(uint256)" --rpc-url "$RPC_URL"
expect_eq "get() initial" "$(num "$OUT")" 0

run "cast send increment()" "$CAST" send "$COUNTER" "increment()" "${CASTTX[@]}" --json
INC_TX="$(jget "$OUT" j.transactionHash)"
expect_eq "increment() status" "$(jget "$OUT" j.status)" 0x1

run "cast call get()" "$CAST" call "$COUNTER" "get()(uint256)" --rpc-url "$RPC_URL"
expect_eq "get() after increment" "$(num "$OUT")" 1

run "cast keccak" "$CAST" keccak "Incremented(address,uint256)"; INC_TOPIC="$OUT"
run "cast receipt increment" "$CAST" receipt "$INC_TX" --rpc-url "$RPC_URL" --json
RC="$OUT"
expect_eq "receipt status" "$(jget "$RC" j.status)" 0x1
expect_eq "receipt log count" "$(jget "$RC" j.logs.length)" 1
expect_eq "receipt log address" "$(jget "$RC" 'j.logs[0].address.toLowerCase()')" "${COUNTER,,}"
expect_eq "receipt log topic0" "$(jget "$RC" 'j.logs[0].topics[0]')" "$INC_TOPIC"
expect_eq "receipt log topic1 (by)" "$(jget "$RC" 'j.logs[0].topics[1].slice(-40)')" "$(tr A-F a-f <<<"${ME:2}")"
expect_eq "receipt log data (newValue)" "$(jget "$RC" 'BigInt(j.logs[0].data).toString()')" 1
run "cast receipt (text)" "$CAST" receipt "$INC_TX" --rpc-url "$RPC_URL"; ok "cast receipt text form"
run "cast tx" "$CAST" tx "$INC_TX" --rpc-url "$RPC_URL" --json
expect_eq "cast tx from" "$(jget "$OUT" 'j.from.toLowerCase()')" "${ME,,}"

run "cast send set(42)" "$CAST" send "$COUNTER" "set(uint256)" 42 "${CASTTX[@]}" --json
expect_eq "set(42) status" "$(jget "$OUT" j.status)" 0x1
run "cast call get()" "$CAST" call "$COUNTER" "get()(uint256)" --rpc-url "$RPC_URL"
expect_eq "get() after set" "$(num "$OUT")" 42
run "cast storage slot 0" "$CAST" storage "$COUNTER" 0 --rpc-url "$RPC_URL"
expect_eq "storage slot 0" "$(node -p "BigInt('$OUT').toString()")" 42

# --- an unlocked dev account: cast fills and the node signs (eth_sendTransaction) ----------
run "cast send --unlocked" "$CAST" send 0x000000000000000000000000000000000000dEaD --value 1 \
  --unlocked --from "$ME" --rpc-url "$RPC_URL" --json
expect_eq "unlocked send status" "$(jget "$OUT" j.status)" 0x1
expect_eq "unlocked send from" "$(jget "$OUT" 'j.from.toLowerCase()')" "${ME,,}"

# --- reverts ------------------------------------------------------------------
run_fails "cast call fail() (eth_call revert reason)" "counter: forced failure" \
  "$CAST" call "$COUNTER" "fail()" --rpc-url "$RPC_URL"
ok "cast call fail() reverts with reason"
run_fails "cast send fail() (eth_estimateGas revert reason)" "counter: forced failure" \
  "$CAST" send "$COUNTER" "fail()" "${CASTTX[@]}"
ok "cast send fail() rejected at estimateGas with reason"
run_fails "cast call failCustom() (custom error data)" "0x8fadac17" \
  "$CAST" call "$COUNTER" "failCustom()" --rpc-url "$RPC_URL"
ok "cast call failCustom() returns CounterError selector 0x8fadac17"
run "cast send fail() with fixed gas (mined revert)" \
  "$CAST" send "$COUNTER" "fail()" "${CASTTX[@]}" --gas-limit 100000 --json
expect_eq "mined revert status" "$(jget "$OUT" j.status)" 0x0
FAIL_TX="$(jget "$OUT" j.transactionHash)"
run "cast receipt (reverted)" "$CAST" receipt "$FAIL_TX" --rpc-url "$RPC_URL"
if grep -q "counter: forced failure" <<<"$OUT"; then ok "cast receipt shows revertReason"
else echo "warn cast receipt of reverted tx has no revertReason (cast replays via eth_call at the tx block)"; fi
run "cast call get()" "$CAST" call "$COUNTER" "get()(uint256)" --rpc-url "$RPC_URL"
expect_eq "get() unchanged after revert" "$(num "$OUT")" 42

# --- TestToken ------------------------------------------------------------------
SUPPLY=1000000000000000000000000
run "token totalSupply" "$CAST" call "$TOKEN" "totalSupply()(uint256)" --rpc-url "$RPC_URL"
expect_eq "totalSupply" "$(num "$OUT")" "$SUPPLY"
run "token balanceOf(deployer)" "$CAST" call "$TOKEN" "balanceOf(address)(uint256)" "$ME" --rpc-url "$RPC_URL"
expect_eq "balanceOf(deployer)" "$(num "$OUT")" "$SUPPLY"
run "token symbol" "$CAST" call "$TOKEN" "symbol()(string)" --rpc-url "$RPC_URL"
expect_eq "symbol" "$OUT" '"TST"'
run "token transfer" "$CAST" send "$TOKEN" "transfer(address,uint256)(bool)" "$RECIPIENT" 1000 "${CASTTX[@]}" --json
expect_eq "transfer status" "$(jget "$OUT" j.status)" 0x1
XRC="$OUT"
XFER_BLOCK="$(jget "$XRC" 'Number(j.blockNumber)')"
run "cast keccak" "$CAST" keccak "Transfer(address,address,uint256)"; XFER_TOPIC="$OUT"
expect_eq "transfer log topic0" "$(jget "$XRC" 'j.logs[0].topics[0]')" "$XFER_TOPIC"
expect_eq "transfer log value" "$(jget "$XRC" 'BigInt(j.logs[0].data).toString()')" 1000
run "token balanceOf(recipient)" "$CAST" call "$TOKEN" "balanceOf(address)(uint256)" "$RECIPIENT" --rpc-url "$RPC_URL"
expect_eq "balanceOf(recipient)" "$(num "$OUT")" 1000
run "token approve" "$CAST" send "$TOKEN" "approve(address,uint256)" "$RECIPIENT" 5 "${CASTTX[@]}" --json
expect_eq "approve status" "$(jget "$OUT" j.status)" 0x1
run "token allowance" "$CAST" call "$TOKEN" "allowance(address,address)(uint256)" "$ME" "$RECIPIENT" --rpc-url "$RPC_URL"
expect_eq "allowance" "$(num "$OUT")" 5
run_fails "token over-transfer reverts" "ERC20: insufficient balance" \
  "$CAST" call "$TOKEN" "transfer(address,uint256)" "$ME" 1001 --from "$RECIPIENT" --rpc-url "$RPC_URL"
ok "over-transfer reverts with reason"

# --- ether transfer + balances ----------------------------------------------------
run "cast balance (recipient before)" "$CAST" balance "$RECIPIENT" --rpc-url "$RPC_URL"; BEFORE="$OUT"
run "cast send value" "$CAST" send "$RECIPIENT" --value 12345 "${CASTTX[@]}" --json
expect_eq "value transfer status" "$(jget "$OUT" j.status)" 0x1
run "cast balance (recipient after)" "$CAST" balance "$RECIPIENT" --rpc-url "$RPC_URL"
expect_eq "recipient balance delta" "$(node -p "(BigInt('$OUT')-BigInt('$BEFORE')).toString()")" 12345
run "cast nonce" "$CAST" nonce "$ME" --rpc-url "$RPC_URL"; ok "cast nonce $OUT"

# --- blocks & logs ----------------------------------------------------------------
run "cast block latest" "$CAST" block latest --rpc-url "$RPC_URL" --json
LATEST="$(jget "$OUT" 'Number(j.number)')"
[[ "$(jget "$OUT" j.hash)" =~ ^0x[0-9a-f]{64}$ ]] || fail "cast block latest: bad hash" "$OUT"
[[ "$LATEST" -gt "$START_BLOCK" ]] || fail "latest block $LATEST not above start $START_BLOCK"
ok "cast block latest = $LATEST"
run "cast block latest (text)" "$CAST" block latest --rpc-url "$RPC_URL"; ok "cast block latest text form"
run "cast block-number" "$CAST" block-number --rpc-url "$RPC_URL"; ok "cast block-number $OUT"

run "cast logs Incremented" "$CAST" logs --from-block "$START_BLOCK" --to-block latest \
  --address "$COUNTER" "Incremented(address indexed by, uint256 newValue)" --rpc-url "$RPC_URL" --json
expect_eq "Incremented log count" "$(jget "$OUT" j.length)" 1
expect_eq "Incremented log tx" "$(jget "$OUT" 'j[0].transactionHash')" "$INC_TX"
run "cast logs Transfer(to=recipient)" "$CAST" logs --from-block "$XFER_BLOCK" --to-block "$XFER_BLOCK" \
  "Transfer(address indexed from, address indexed to, uint256 value)" "" "$RECIPIENT" --rpc-url "$RPC_URL" --json
expect_eq "Transfer log count (filtered by to)" "$(jget "$OUT" j.length)" 1
expect_eq "Transfer log topic0" "$(jget "$OUT" 'j[0].topics[0]')" "$XFER_TOPIC"
run "cast logs by address" "$CAST" logs --from-block "$START_BLOCK" --to-block latest --address "$TOKEN" --rpc-url "$RPC_URL" --json
expect_eq "TestToken log count (mint+transfer+approve)" "$(jget "$OUT" j.length)" 3

# --- fallback: raw deployment with cast send --create ---------------------------
run "forge inspect bytecode" "$FORGE" inspect test/Counter.sol:Counter bytecode
BYTECODE="$(tail -n1 <<<"$OUT")"
[[ "$BYTECODE" =~ ^0x[0-9a-f]+$ ]] || fail "forge inspect: no bytecode" "$OUT"
run "cast send --create" "$CAST" send "${CASTTX[@]}" --json --create "$BYTECODE"
expect_eq "create status" "$(jget "$OUT" j.status)" 0x1
C2="$(jget "$OUT" j.contractAddress)"
run "cast send increment() on created" "$CAST" send "$C2" "increment()" "${CASTTX[@]}" --json
run "cast call get() on created" "$CAST" call "$C2" "get()(uint256)" --rpc-url "$RPC_URL"
expect_eq "cast --create Counter get()" "$(num "$OUT")" 1

echo "foundry-smoke: all $PASS checks passed against $RPC_URL"
