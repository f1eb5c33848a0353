//! Raw transaction bytes as `eth_sendRawTransaction` receives them: EIP-2718 decoding, then
//! the pool's stateless checks (signature recovery, chain id, sizes, intrinsic gas).
#![no_main]

use alloy_consensus::TxEnvelope;
use alloy_eips::Decodable2718;
use libfuzzer_sys::fuzz_target;
use pipe_mempool::{Pool, PoolConfig};
use std::sync::OnceLock;

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(PoolConfig::new(31337, 30_000_000)))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = TxEnvelope::decode_2718_exact(data) {
        if let Ok(sender) = pool().check_stateless(&tx, data.len()) {
            let _ = pipe_executor::intrinsic_gas(&tx, sender);
        }
    }
});
