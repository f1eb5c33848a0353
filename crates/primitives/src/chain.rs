//! Chain configuration: id, genesis, gas limit and the fee rules every block follows.

use alloy_eips::eip1559::BaseFeeParams;
use alloy_genesis::{Genesis, GenesisAccount};
use alloy_primitives::{Address, Bytes, U256};
use serde::{Deserialize, Serialize};

use crate::InferencePricing;

/// Default chain id of the dev chain: anvil's and hardhat's, so wallets and tools work as-is.
pub const DEV_CHAIN_ID: u64 = 31337;
/// Default block gas limit, as anvil's.
pub const DEFAULT_GAS_LIMIT: u64 = 30_000_000;
/// Base fee of the first block after genesis (1 gwei), as anvil's.
pub const INITIAL_BASE_FEE: u64 = 1_000_000_000;

/// The Prague system contracts a current Ethereum chain has at genesis (EIP-2935 block-hash
/// history, EIP-4788 beacon roots, EIP-7002 withdrawal and EIP-7251 consolidation requests).
/// The block executor calls them every block, so a genesis without them would not be a
/// current-hardfork chain.
pub fn system_contracts() -> [(Address, Bytes); 4] {
    use alloy_eips::{eip2935, eip4788, eip7002, eip7251};
    [
        (
            eip2935::HISTORY_STORAGE_ADDRESS,
            eip2935::HISTORY_STORAGE_CODE.clone(),
        ),
        (
            eip4788::BEACON_ROOTS_ADDRESS,
            eip4788::BEACON_ROOTS_CODE.clone(),
        ),
        (
            eip7002::WITHDRAWAL_REQUEST_PREDEPLOY_ADDRESS,
            eip7002::WITHDRAWAL_REQUEST_PREDEPLOY_CODE.clone(),
        ),
        (
            eip7251::CONSOLIDATION_REQUEST_PREDEPLOY_ADDRESS,
            eip7251::CONSOLIDATION_REQUEST_PREDEPLOY_CODE.clone(),
        ),
    ]
}

/// The system contracts that record the chain's own history (EIP-2935 block hashes, EIP-4788
/// beacon roots): a dev chain's revert leaves them alone (the blocks they record still exist),
/// and a loaded state dump does not overwrite them.
pub const CHAIN_HISTORY_CONTRACTS: [Address; 2] = [
    alloy_eips::eip2935::HISTORY_STORAGE_ADDRESS,
    alloy_eips::eip4788::BEACON_ROOTS_ADDRESS,
];

/// The deterministic CREATE2 deployer (Arachnid's proxy) every dev chain has at this address;
/// forge deploys through it by default, so `forge script`/`forge create --create2` work.
pub const CREATE2_DEPLOYER: Address =
    alloy_primitives::address!("0x4e59b44847b379578588920ca78fbf26c0b4956c");
/// Runtime code of [`CREATE2_DEPLOYER`].
pub const CREATE2_DEPLOYER_CODE: &[u8] = &alloy_primitives::hex!(
    "7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe03601600081602082378035828234f58015156039578182fd5b8082525050506014600cf3"
);

/// Everything that fixes which chain this is. Two nodes with equal configs compute equal
/// genesis blocks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChainConfig {
    pub chain_id: u64,
    /// Gas limit of every block (the dev chain does not vote it up or down).
    pub gas_limit: u64,
    /// Geth-style genesis (`alloc`, timestamp, extra data, ...).
    pub genesis: Genesis,
    /// How the inference gas price moves with load ([`crate::header`]).
    #[serde(default)]
    pub inference_pricing: InferencePricing,
    /// The dev chain: blocks may carry state edits and impersonated senders
    /// ([`crate::edits`]). Only [`ChainConfig::dev`] sets it; every other chain refuses both,
    /// in its own blocks and in blocks it replays.
    #[serde(default)]
    pub dev_controls: bool,
}

impl ChainConfig {
    /// A dev chain funding `accounts` with `balance` wei each, plus the system contracts.
    pub fn dev(accounts: impl IntoIterator<Item = Address>, balance: U256) -> Self {
        let alloc = accounts
            .into_iter()
            .map(|a| (a, GenesisAccount::default().with_balance(balance)))
            .chain(std::iter::once((
                CREATE2_DEPLOYER,
                GenesisAccount::default()
                    .with_code(Some(Bytes::from_static(CREATE2_DEPLOYER_CODE))),
            )));
        let genesis = Genesis {
            gas_limit: DEFAULT_GAS_LIMIT,
            base_fee_per_gas: Some(INITIAL_BASE_FEE as u128),
            ..Default::default()
        }
        .extend_accounts(alloc);
        Self {
            dev_controls: true,
            ..Self::from_genesis(DEV_CHAIN_ID, genesis)
        }
    }

    /// Wraps a genesis file, adding the system contracts where the file does not set them.
    pub fn from_genesis(chain_id: u64, mut genesis: Genesis) -> Self {
        for (address, code) in system_contracts() {
            genesis.alloc.entry(address).or_insert_with(|| {
                GenesisAccount::default()
                    .with_nonce(Some(1))
                    .with_code(Some(code))
            });
        }
        let gas_limit = if genesis.gas_limit == 0 {
            DEFAULT_GAS_LIMIT
        } else {
            genesis.gas_limit
        };
        genesis.gas_limit = gas_limit;
        Self {
            chain_id,
            gas_limit,
            genesis,
            inference_pricing: InferencePricing::default(),
            dev_controls: false,
        }
    }

    /// EIP-1559 base fee rules (Ethereum mainnet's).
    pub fn base_fee_params(&self) -> BaseFeeParams {
        BaseFeeParams::ethereum()
    }

    /// Base fee of the genesis block.
    pub fn genesis_base_fee(&self) -> u64 {
        self.genesis
            .base_fee_per_gas
            .map(|f| f as u64)
            .unwrap_or(INITIAL_BASE_FEE)
    }
}
