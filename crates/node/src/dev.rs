//! Dev accounts: the ten derived from the standard test mnemonic, funded at genesis, exactly
//! the ones anvil and hardhat fund, so every tool's defaults and tutorials work.

use alloy_primitives::{Address, B256};
use alloy_signer_local::{MnemonicBuilder, PrivateKeySigner, coins_bip39::English};

pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// The first `n` accounts of the dev mnemonic (BIP-44 path m/44'/60'/0'/0/i).
pub fn dev_signers(n: u32) -> anyhow::Result<Vec<PrivateKeySigner>> {
    (0..n)
        .map(|i| {
            Ok(MnemonicBuilder::<English>::default()
                .phrase(DEV_MNEMONIC)
                .index(i)?
                .build()?)
        })
        .collect()
}

/// Prints accounts and keys the way anvil does, so people know where to look.
pub fn banner(signers: &[PrivateKeySigner], balance_eth: u64) -> String {
    let mut s = String::from("\nAvailable Accounts\n==================\n");
    for (i, k) in signers.iter().enumerate() {
        s += &format!(
            "({i}) {} ({balance_eth}.000000000000000000 ETH)\n",
            k.address()
        );
    }
    s += "\nPrivate Keys\n==================\n";
    for (i, k) in signers.iter().enumerate() {
        s += &format!("({i}) {}\n", B256::from_slice(&k.to_bytes()[..]));
    }
    s += &format!(
        "\nWallet\n==================\nMnemonic:          {DEV_MNEMONIC}\nDerivation path:   m/44'/60'/0'/0/\n"
    );
    s
}

/// The example models a dev chain starts with, by name, with the id contracts pass.
pub fn models_banner(models: &[(String, pipe_primitives::ModelMeta)]) -> String {
    let mut s = String::from("\nExample Models (modelCID)\n==================\n");
    for (name, meta) in models {
        s += &format!("{name:<15} {}\n", meta.id);
    }
    s
}

pub fn addresses(signers: &[PrivateKeySigner]) -> Vec<Address> {
    signers.iter().map(|s| s.address()).collect()
}

pub use pipe_worker::dev_worker_signer;

/// The worker registry contract at genesis: owned by `owner`, with `workers` registered.
pub fn registry_account(owner: Address, workers: &[Address]) -> alloy_genesis::GenesisAccount {
    use pipe_executor::attest::{WORKER_REGISTRY_CODE, registration_slot};
    let mut storage = std::collections::BTreeMap::new();
    storage.insert(B256::ZERO, owner.into_word());
    for w in workers {
        storage.insert(registration_slot(*w), B256::with_last_byte(1));
    }
    alloy_genesis::GenesisAccount::default()
        .with_nonce(Some(1))
        .with_code(Some(WORKER_REGISTRY_CODE.clone()))
        .with_storage(Some(storage))
}
