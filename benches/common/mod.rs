//! Helpers shared by the benches.

#![allow(dead_code)] // each bench uses a different subset

use std::net::Ipv4Addr;
use std::path::Path;

/// splitmix64 (Steele, Lea, Flood 2014): a tiny fixed-seed generator, so every run draws
/// the same addresses and requests.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// 128 random bits.
    pub fn next_u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }

    /// Uniform in `0..n` (modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `lo..=hi` (modulo bias is irrelevant here).
    pub fn between(&mut self, lo: u128, hi: u128) -> u128 {
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.next_u128() % span,
            None => self.next_u128(),
        }
    }

    /// A uniformly random IPv4 address.
    pub fn ipv4(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(self.next() as u32)
    }
}

/// The non-empty, non-comment lines of a text file, trimmed.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}
