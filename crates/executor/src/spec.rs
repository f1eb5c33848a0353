//! The hardfork schedule: every Ethereum fork through Osaka active from genesis.

use alloy_evm::eth::spec::EthExecutorSpec;
use alloy_hardforks::{EthereumChainHardforks, EthereumHardfork, EthereumHardforks, ForkCondition};
use alloy_primitives::Address;

/// Name of the hardfork the chain runs, for docs and `web3_clientVersion`-style output.
pub const HARDFORK: &str = "osaka";

/// Fork schedule for revm and for alloy-evm's system calls before and after each block.
#[derive(Clone, Debug)]
pub struct PipeSpec {
    forks: EthereumChainHardforks,
}

impl Default for PipeSpec {
    fn default() -> Self {
        // Ethereum's devnet schedule (all forks at genesis), minus the DAO fork's irregular
        // balance transfer, which has no place on a new chain.
        let forks = EthereumHardfork::devnet()
            .into_iter()
            .filter(|(fork, _)| *fork != EthereumHardfork::Dao)
            .filter(|(fork, _)| !matches!(fork, EthereumHardfork::Bpo1 | EthereumHardfork::Bpo2));
        Self {
            forks: EthereumChainHardforks::new(forks),
        }
    }
}

impl EthereumHardforks for PipeSpec {
    fn ethereum_fork_activation(&self, fork: EthereumHardfork) -> ForkCondition {
        self.forks.ethereum_fork_activation(fork)
    }
}

impl EthExecutorSpec for PipeSpec {
    fn deposit_contract_address(&self) -> Option<Address> {
        // No beacon chain deposits on this chain.
        None
    }
}
