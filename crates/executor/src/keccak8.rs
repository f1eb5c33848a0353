//! Keccak-256 of many messages at once: eight at a time, one per 64-bit lane of the AVX-512
//! registers, where the CPU has AVX-512; one at a time through alloy's `keccak256` elsewhere.
//!
//! Why: assembling a block's transaction and receipt tries is mostly hashing leaves (a plain
//! transfer's receipt leaf alone is three Keccak permutations, for its 256-byte bloom), and the
//! leaves of a trie are independent of each other. Eight independent Keccak-f\[1600\] states
//! fit the eight lanes of 25 `zmm` registers, and the round maps onto single instructions:
//! `vprolvq` for the rotations, `vpternlogq` for θ's three-way XOR and for χ's `a ^ (!b & c)`.
//! Eight permutations then cost about what two scalar ones do.
//!
//! No well-kept crate does this on stable Rust: RustCrypto's `keccak` has parallel backends,
//! but only through nightly `core::simd`. The permutation here follows the Keccak reference
//! (FIPS 202 §3.2, with Keccak's original `0x01` padding as Ethereum uses it); the tests check
//! it against `keccak256` for every length around the 136-byte block boundaries and for
//! mixed-length batches.

use alloy_primitives::{B256, keccak256};

/// Hashes every message of `inputs` into the same position of `out`.
///
/// # Panics
/// If `out` is shorter than `inputs` (a caller's bug, not input-dependent).
pub(crate) fn keccak256_many(inputs: &[&[u8]], out: &mut [B256]) {
    hash_many(inputs, out, vector_unit());
}

/// Whether this CPU runs the eight-lane path (std caches the answer).
fn vector_unit() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `vector: false` forces the scalar path (tests compare the two); `true` takes the vector
/// path only where the CPU has it.
fn hash_many(inputs: &[&[u8]], out: &mut [B256], vector: bool) {
    assert!(out.len() >= inputs.len(), "one output per input");
    #[cfg(target_arch = "x86_64")]
    if vector && inputs.len() > 1 && vector_unit() {
        for (msgs, hashes) in inputs.chunks(LANES).zip(out.chunks_mut(LANES)) {
            // SAFETY: the CPU has AVX-512F (`vector_unit`, just above).
            unsafe { x8::keccak256_x8(msgs, hashes) };
        }
        return;
    }
    let _ = vector;
    for (msg, hash) in inputs.iter().zip(out.iter_mut()) {
        *hash = keccak256(msg);
    }
}

/// Messages hashed together.
#[cfg(target_arch = "x86_64")]
const LANES: usize = 8;

/// Bytes absorbed per permutation by Keccak-256 (1600 − 2·256 bits).
#[cfg(target_arch = "x86_64")]
const RATE: usize = 136;

#[cfg(target_arch = "x86_64")]
mod x8 {
    use core::arch::x86_64::{
        __m512i, _mm512_loadu_si512, _mm512_rolv_epi64, _mm512_set1_epi64, _mm512_setzero_si512,
        _mm512_storeu_si512, _mm512_ternarylogic_epi64, _mm512_xor_si512,
    };

    use alloy_primitives::B256;

    use super::{LANES, RATE};

    /// Rotation offsets of ρ, by state index `x + 5·y`.
    const RHO: [u32; 25] = [
        0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56,
        14,
    ];

    /// Round constants of ι.
    const RC: [u64; 24] = [
        0x0000_0000_0000_0001,
        0x0000_0000_0000_8082,
        0x8000_0000_0000_808A,
        0x8000_0000_8000_8000,
        0x0000_0000_0000_808B,
        0x0000_0000_8000_0001,
        0x8000_0000_8000_8081,
        0x8000_0000_0000_8009,
        0x0000_0000_0000_008A,
        0x0000_0000_0000_0088,
        0x0000_0000_8000_8009,
        0x0000_0000_8000_000A,
        0x0000_0000_8000_808B,
        0x8000_0000_0000_008B,
        0x8000_0000_0000_8089,
        0x8000_0000_0000_8003,
        0x8000_0000_0000_8002,
        0x8000_0000_0000_0080,
        0x0000_0000_0000_800A,
        0x8000_0000_8000_000A,
        0x8000_0000_8000_8081,
        0x8000_0000_0000_8080,
        0x0000_0000_8000_0001,
        0x8000_0000_8000_8008,
    ];

    /// `vpternlogq` truth tables: `a ^ b ^ c`, and χ's `a ^ (!b & c)`.
    const XOR3: i32 = 0x96;
    const CHI: i32 = 0xD2;

    #[target_feature(enable = "avx512f")]
    fn rol(a: __m512i, n: u32) -> __m512i {
        _mm512_rolv_epi64(a, _mm512_set1_epi64(i64::from(n)))
    }

    /// Keccak-f\[1600\] on eight states at once; `a[i]` holds word `i` of each lane's state.
    #[target_feature(enable = "avx512f")]
    fn permute(a: &mut [__m512i; 25]) {
        for rc in RC {
            // θ: every word takes the parity of two neighbouring columns.
            let mut c = [_mm512_setzero_si512(); 5];
            for (x, c) in c.iter_mut().enumerate() {
                let t = _mm512_ternarylogic_epi64::<XOR3>(a[x], a[x + 5], a[x + 10]);
                *c = _mm512_ternarylogic_epi64::<XOR3>(t, a[x + 15], a[x + 20]);
            }
            for x in 0..5 {
                let d = _mm512_xor_si512(c[(x + 4) % 5], rol(c[(x + 1) % 5], 1));
                for y in 0..5 {
                    a[x + 5 * y] = _mm512_xor_si512(a[x + 5 * y], d);
                }
            }
            // ρ and π: B[y, 2x + 3y] = rot(A[x, y], r[x, y]).
            let mut b = [_mm512_setzero_si512(); 25];
            for x in 0..5 {
                for y in 0..5 {
                    b[y + 5 * ((2 * x + 3 * y) % 5)] = rol(a[x + 5 * y], RHO[x + 5 * y]);
                }
            }
            // χ: A[x, y] = B[x, y] ^ (!B[x + 1, y] & B[x + 2, y]).
            for y in 0..5 {
                for x in 0..5 {
                    a[x + 5 * y] = _mm512_ternarylogic_epi64::<CHI>(
                        b[x + 5 * y],
                        b[(x + 1) % 5 + 5 * y],
                        b[(x + 2) % 5 + 5 * y],
                    );
                }
            }
            // ι.
            a[0] = _mm512_xor_si512(a[0], _mm512_set1_epi64(rc as i64));
        }
    }

    /// Keccak-256 of up to eight messages of any lengths.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn keccak256_x8(msgs: &[&[u8]], out: &mut [B256]) {
        debug_assert!(msgs.len() <= LANES && out.len() >= msgs.len());
        // Padding adds at least one byte, so a message takes `len / RATE + 1` blocks.
        let mut blocks = [0usize; LANES];
        for (b, m) in blocks.iter_mut().zip(msgs) {
            *b = m.len() / RATE + 1;
        }
        let rounds = blocks.iter().copied().max().unwrap_or(0);
        let mut state = [_mm512_setzero_si512(); 25];
        for k in 0..rounds {
            // Block `k` of every lane, word-major so each word loads as one vector. A lane
            // already finished absorbs zeros; its hash was taken after its last block.
            let mut words = [[0u64; LANES]; RATE / 8];
            for (lane, msg) in msgs.iter().enumerate() {
                if k >= blocks[lane] {
                    continue;
                }
                let mut block = [0u8; RATE];
                let start = k * RATE;
                let chunk = &msg[start..msg.len().min(start + RATE)];
                block[..chunk.len()].copy_from_slice(chunk);
                if k + 1 == blocks[lane] {
                    // Keccak's pad10*1: 0x01 after the message, 0x80 in the block's last byte.
                    block[chunk.len()] ^= 0x01;
                    block[RATE - 1] ^= 0x80;
                }
                for (w, bytes) in block.chunks_exact(8).enumerate() {
                    words[w][lane] = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
                }
            }
            for (s, w) in state.iter_mut().zip(&words) {
                // SAFETY: `w` is eight u64s, the 64 bytes an unaligned load reads.
                let v = unsafe { _mm512_loadu_si512(w.as_ptr().cast()) };
                *s = _mm512_xor_si512(*s, v);
            }
            permute(&mut state);
            if !blocks[..msgs.len()].contains(&(k + 1)) {
                continue;
            }
            // Some lanes end here: their digest is the first four words of their state.
            let mut digest = [[0u64; LANES]; 4];
            for (d, s) in digest.iter_mut().zip(&state) {
                // SAFETY: `d` is eight u64s, the 64 bytes an unaligned store writes.
                unsafe { _mm512_storeu_si512(d.as_mut_ptr().cast(), *s) };
            }
            for (lane, hash) in out.iter_mut().enumerate().take(msgs.len()) {
                if blocks[lane] == k + 1 {
                    for (w, d) in digest.iter().enumerate() {
                        hash[w * 8..w * 8 + 8].copy_from_slice(&d[lane].to_le_bytes());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Both paths where the CPU has the vector unit; the scalar one everywhere.
    fn paths() -> Vec<bool> {
        let has = vector_unit();
        eprintln!(
            "keccak8: AVX-512F {}",
            if has { "present" } else { "absent" }
        );
        if has { vec![true, false] } else { vec![false] }
    }

    #[test]
    fn every_length_across_three_blocks_equals_keccak256() {
        // Lengths 0..=420 cover each padding case: 0x01 and 0x80 in different bytes, in the
        // same byte (135 mod 136), and a block of padding alone (136 mod 136).
        let msgs: Vec<Vec<u8>> = (0..=420).map(|n| bytes(n, n as u8)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        for vector in paths() {
            let mut out = vec![B256::ZERO; refs.len()];
            hash_many(&refs, &mut out, vector);
            for (m, h) in refs.iter().zip(&out) {
                assert_eq!(*h, keccak256(m), "length {}, vector {vector}", m.len());
            }
        }
    }

    #[test]
    fn mixed_lengths_and_partial_batches() {
        // Lanes that end at different blocks, and batches of every size up to and past eight.
        let lens = [300usize, 0, 136, 1, 1000, 135, 137, 64, 271, 272, 5];
        let msgs: Vec<Vec<u8>> = lens.iter().map(|&n| bytes(n, 7)).collect();
        for vector in paths() {
            for count in 0..=msgs.len() {
                let refs: Vec<&[u8]> = msgs[..count].iter().map(Vec::as_slice).collect();
                let mut out = vec![B256::ZERO; count + 1];
                hash_many(&refs, &mut out, vector);
                for (i, m) in refs.iter().enumerate() {
                    assert_eq!(out[i], keccak256(m), "batch of {count}, message {i}");
                }
                assert_eq!(out[count], B256::ZERO, "nothing written past the inputs");
            }
        }
    }
}
