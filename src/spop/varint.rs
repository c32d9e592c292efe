//! HAProxy's variable-length integer encoding (SPOE.txt §3.1, `encode_varint` /
//! `decode_varint` in `include/haproxy/intops.h`).
//!
//! This is **not** LEB128. The first byte carries the value itself when it is below 240;
//! otherwise its low 4 bits start the value and each following byte adds its whole value
//! (high bit included) shifted by 4, 11, 18, ... bits, the last byte being below 128:
//!
//! ```text
//! value            bytes
//! 0 ..= 239        1     v
//! 240 ..= 2287     2     (v | 0xf0), (v - 240) >> 4
//! 2288 ..= 264431  3     ...
//! u64::MAX         10
//! ```
//!
//! Adding the continuation bytes unmasked undoes the encoder's `- 240` and `- 128`
//! offsets. Example: 2510 is `fe 8d 00` (LEB128 would read 1790).
//!
//! Signed integers travel as their 64-bit two's complement, so a negative number always
//! takes 10 bytes.
//!
//! ```
//! use spoa_guard::spop::varint;
//!
//! let mut buf = Vec::new();
//! varint::encode(2510, &mut buf);
//! assert_eq!(buf, [0xfe, 0x8d, 0x00]);
//! assert_eq!(varint::decode(&buf), Ok((2510, 3)));
//! ```

use bytes::BufMut;

/// The longest encoding of a `u64`.
pub const MAX_LEN: usize = 10;

/// Why a varint could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended before the last byte (one below 128).
    Truncated,
    /// More than [`MAX_LEN`] bytes, or a value above `u64::MAX`.
    Overflow,
}

/// Appends the encoding of `value` to `dst`.
pub fn encode(mut value: u64, dst: &mut impl BufMut) {
    if value < 240 {
        dst.put_u8(low_byte(value));
        return;
    }
    dst.put_u8(low_byte(value) | 0xf0);
    value = (value - 240) >> 4;
    while value >= 128 {
        dst.put_u8(low_byte(value) | 0x80);
        value = (value - 128) >> 7;
    }
    dst.put_u8(low_byte(value));
}

/// The number of bytes [`encode`] writes for `value`.
pub fn encoded_len(mut value: u64) -> usize {
    if value < 240 {
        return 1;
    }
    let mut len = 2;
    value = (value - 240) >> 4;
    while value >= 128 {
        len += 1;
        value = (value - 128) >> 7;
    }
    len
}

/// Decodes one varint from the start of `input`, returning the value and the number of
/// bytes it took.
///
/// # Errors
///
/// [`VarintError::Truncated`] when `input` ends inside the varint, and
/// [`VarintError::Overflow`] when it is longer than [`MAX_LEN`] bytes or its value does
/// not fit in a `u64` (HAProxy does not check either; we do).
pub fn decode(input: &[u8]) -> Result<(u64, usize), VarintError> {
    let (&first, rest) = input.split_first().ok_or(VarintError::Truncated)?;
    if first < 240 {
        return Ok((u64::from(first), 1));
    }
    // Accumulate in u128: the 10th byte is shifted by 60 bits and may overflow a u64.
    let mut value = u128::from(first);
    let mut shift = 4u32;
    for (i, &byte) in rest.iter().enumerate() {
        value += u128::from(byte) << shift;
        if byte < 128 {
            let value = u64::try_from(value).map_err(|_| VarintError::Overflow)?;
            return Ok((value, i + 2));
        }
        if i + 2 >= MAX_LEN {
            return Err(VarintError::Overflow);
        }
        shift += 7;
    }
    Err(VarintError::Truncated)
}

/// The low 8 bits of `value`; the varint arithmetic keeps only those on purpose.
fn low_byte(value: u64) -> u8 {
    value.to_le_bytes()[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out);
        out
    }

    /// The values spop.md lists, with the bytes HAProxy produced for them.
    #[test]
    fn known_encodings() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (239, &[0xef]),
            (240, &[0xf0, 0x00]),
            (300, &[0xfc, 0x03]),
            (306, &[0xf2, 0x04]),
            (1001, &[0xf9, 0x2f]),
            (2287, &[0xff, 0x7f]),
            (2288, &[0xf0, 0x80, 0x00]),
            (2510, &[0xfe, 0x8d, 0x00]),
            (16380, &[0xfc, 0xf0, 0x06]),
            (20080, &[0xf0, 0xd8, 0x08]),
            (20180, &[0xf4, 0xde, 0x08]),
            (4294967296, &[0xf0, 0xf1, 0xfe, 0xfe, 0x7e]),
            (
                (-7i64) as u64,
                &[0xf9, 0xf0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x0e],
            ),
            (
                (-5i64) as u64,
                &[0xfb, 0xf0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x0e],
            ),
        ];
        for &(value, bytes) in cases {
            assert_eq!(enc(value), bytes, "encode {value}");
            assert_eq!(decode(bytes), Ok((value, bytes.len())), "decode {value}");
            assert_eq!(encoded_len(value), bytes.len(), "encoded_len {value}");
        }
    }

    #[test]
    fn range_boundaries() {
        for (value, len) in [
            (264431u64, 3),
            (264432, 4),
            (33818863, 4),
            (33818864, 5),
            (u64::MAX, 10),
        ] {
            assert_eq!(enc(value).len(), len, "{value}");
        }
    }

    #[test]
    fn truncated() {
        assert_eq!(decode(&[]), Err(VarintError::Truncated));
        assert_eq!(decode(&[0xf0]), Err(VarintError::Truncated));
        assert_eq!(decode(&[0xfe, 0x8d]), Err(VarintError::Truncated));
    }

    #[test]
    fn overflow() {
        // Eleven bytes: never a valid u64.
        let mut long = vec![0xff; 10];
        long.push(0);
        assert_eq!(decode(&long), Err(VarintError::Overflow));
        // Ten bytes whose value exceeds u64::MAX.
        let mut big = vec![0xff; 9];
        big.push(0x7f);
        assert_eq!(decode(&big), Err(VarintError::Overflow));
    }

    proptest! {
        #[test]
        fn round_trip(value: u64) {
            let bytes = enc(value);
            prop_assert_eq!(bytes.len(), encoded_len(value));
            prop_assert_eq!(decode(&bytes), Ok((value, bytes.len())));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            if let Ok((_, used)) = decode(&bytes) {
                prop_assert!((1..=MAX_LEN).contains(&used) && used <= bytes.len());
            }
        }
    }
}
