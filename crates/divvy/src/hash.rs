//! Stable hashes for routing.
//!
//! Every hash here has a fixed specification, so the same key maps to the same backend in every
//! process, on every CPU and in every build: independent divvy instances agree without talking
//! to each other. (`ahash` is used only for internal maps, never for routing.)

/// XXH3-64 of `bytes`, seed 0: the hash divvy uses for keys where no compatibility mode
/// demands another (Maglev, sticky keys, full-address IP hashing).
#[inline]
pub fn xxh3(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// XXH3-64 of `bytes` with `seed`.
#[inline]
pub fn xxh3_seeded(bytes: &[u8], seed: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, seed)
}

/// CRC-32 (IEEE 802.3, the polynomial of zlib and of nginx's `ngx_crc32_long`).
#[inline]
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// The stable key of a backend identity: sticky tokens and retry exclusions use it.
#[inline]
pub(crate) fn backend_key(id: &str) -> u64 {
    xxh3(id.as_bytes())
}

/// SplitMix64's finaliser: a bijective mixer used to turn a counter into a random stream.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Golden vectors: a change here moves every key of every user. These are the published
    // check values of each algorithm.
    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn xxh3_matches_the_reference_for_empty_input() {
        assert_eq!(xxh3(b""), 0x2D06_8005_38D3_94C2);
    }
}
