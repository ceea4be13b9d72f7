//! Decimal text to `f32`, correctly rounded: the fast path (digits 8 at a time) for the plain
//! decimals data files hold (`-12.345`, `6.02e23` with at most 19 digits and a power of ten up to 22), the
//! `fast-float2` crate for everything else (and as the reference the tests hold it to).
//!
//! The fast path is Clinger's: the digits as an exact integer m < 2^53 and 10^|e| ≤ 10^22 are
//! both exact `f64`s, so `m · 10^e` (or `m / 10^-e`) is the correctly rounded `f64`. Rounding
//! that to `f32` is correct too unless the `f64` sits exactly halfway between two `f32`s (the
//! decimal may then lie on either side): such values take the slow path. No `unsafe` here.

/// Powers of ten exact in `f64`.
const POW10: [f64; 23] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22];

/// `s` as an `f32` (correctly rounded), as `fast_float2::parse` reads it; `None` where that
/// finds no number spanning all of `s`.
#[inline]
pub fn parse_f32(s: &[u8]) -> Option<f32> {
    match plain_prefix(s) {
        Some((x, n)) if n == s.len() => Some(x),
        _ => fast_float2::parse::<f32, _>(s).ok(),
    }
}

/// The plain decimal `s` starts with and the bytes it takes, when it is one the fast path
/// reads (`None` otherwise: the caller takes the general path). A number the bytes after it
/// would have continued (a digit, `.`, `e`) is not cut short: it is then `None`.
#[inline]
pub fn plain_prefix(s: &[u8]) -> Option<(f32, usize)> {
    fast_path(s)
}

/// The value of 8 ASCII digits (little-endian in `v`), or `None` if one is not a digit.
#[inline]
fn eight_digits(v: u64) -> Option<u64> {
    let digits = (v & 0xf0f0_f0f0_f0f0_f0f0) == 0x3030_3030_3030_3030
        && (v.wrapping_add(0x0606_0606_0606_0606) & 0xf0f0_f0f0_f0f0_f0f0) == 0x3030_3030_3030_3030;
    if !digits {
        return None;
    }
    let v = v - 0x3030_3030_3030_3030;
    let v = v.wrapping_mul(10) + (v >> 8);
    let hi = (v & 0x0000_00ff_0000_00ff).wrapping_mul(100 + (1_000_000 << 32));
    let lo = ((v >> 16) & 0x0000_00ff_0000_00ff).wrapping_mul(1 + (10_000 << 32));
    Some(hi.wrapping_add(lo) >> 32)
}

/// Adds the digits of `s` from `i` on to `m` (8 at a time where 8 follow): the index after
/// them, and how many there were (`None` past 19 in all, counting `digits` so far).
#[inline]
fn digits(s: &[u8], mut i: usize, m: &mut u64, mut digits: u32) -> Option<(usize, u32)> {
    let start = digits;
    while let Some(chunk) = s.get(i..i + 8) {
        let Some(v) = eight_digits(u64::from_le_bytes(chunk.try_into().ok()?)) else { break };
        if digits + 8 > 19 {
            return None;
        }
        *m = *m * 100_000_000 + v;
        digits += 8;
        i += 8;
    }
    while let Some(&c) = s.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if digits == 19 {
            return None;
        }
        *m = *m * 10 + u64::from(d);
        digits += 1;
        i += 1;
    }
    Some((i, digits - start))
}

/// The plain decimals: `[+-]digits[.digits][(e|E)[+-]digits]`, at least one digit in the
/// mantissa, at most 19 in all (leading zeros included), |exponent − fraction digits| ≤ 22;
/// the value and the bytes read.
#[inline]
fn fast_path(s: &[u8]) -> Option<(f32, usize)> {
    let (neg, mut i) = match s.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let mut m = 0u64;
    let (at, int) = self::digits(s, i, &mut m, 0)?;
    i = at;
    let mut frac = 0i32;
    if s.get(i) == Some(&b'.') {
        let (at, n) = self::digits(s, i + 1, &mut m, int)?;
        i = at;
        frac = n as i32;
    }
    if int + frac as u32 == 0 {
        return None;
    }
    let mut exp = 0i32;
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        let eneg = match s.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        while let Some(&c) = s.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 || exp > 1000 {
                break;
            }
            exp = exp * 10 + i32::from(d);
            i += 1;
        }
        if i == start || exp > 1000 {
            return None;
        }
        if eneg {
            exp = -exp;
        }
    }
    if m > 1 << 53 {
        return None;
    }
    let e = exp - frac;
    let d = match e {
        0..=22 => m as f64 * POW10[e as usize],
        -22..=-1 => m as f64 / POW10[(-e) as usize],
        _ => return None,
    };
    // Exactly halfway between two f32s: the decimal's side is not known here.
    if d.to_bits() & 0x1fff_ffff == 0x1000_0000 {
        return None;
    }
    let f = d as f32;
    Some((if neg { -f } else { f }, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(s: &str) -> Option<u32> {
        fast_float2::parse::<f32, _>(s.as_bytes()).ok().map(f32::to_bits)
    }

    #[test]
    fn awkward_numbers_read_as_the_reference_reads_them() {
        let cases = [
            "0",
            "-0",
            "+1",
            "1.",
            ".5",
            "-.5",
            "1e5",
            "1E-5",
            "1e+5",
            "12345678901234567890",
            "1234567890123456789",
            "0.1",
            "3.4028235e38",
            "1e-45",
            "1e39",
            "nan",
            "inf",
            "-",
            ".",
            "e5",
            "1e",
            "1e+",
            "1.2.3",
            "1,5",
            " 1",
            "1 ",
            "",
            "16777217",
            "9007199254740993",
            "0.000000000000000000000000001",
            "16777216.5",
            "33554431",
            "33554433",
            "1.00000005960464477539",
        ];
        for c in cases {
            assert_eq!(parse_f32(c.as_bytes()).map(f32::to_bits), reference(c), "{c:?}");
        }
    }

    #[test]
    fn prefixes_stop_where_the_number_does() {
        assert_eq!(plain_prefix(b"1.5,2"), Some((1.5, 3)));
        assert_eq!(plain_prefix(b"-12345678.125e1,x"), Some((-123456781.25, 15)));
        assert_eq!(plain_prefix(b"1.5 "), Some((1.5, 3)));
        assert_eq!(plain_prefix(b",1"), None);
        assert_eq!(plain_prefix(b"1e,"), None);
        assert_eq!(plain_prefix(b"12345678901234567890,"), None);
    }

    #[test]
    fn eight_digits_at_once() {
        assert_eq!(eight_digits(u64::from_le_bytes(*b"12345678")), Some(12_345_678));
        assert_eq!(eight_digits(u64::from_le_bytes(*b"00000009")), Some(9));
        assert_eq!(eight_digits(u64::from_le_bytes(*b"1234567.")), None);
        assert_eq!(eight_digits(u64::from_le_bytes(*b"1234567:")), None);
        assert_eq!(eight_digits(u64::from_le_bytes(*b"/1234567")), None);
    }

    proptest! {
        #[test]
        fn decimals_read_as_the_reference_reads_them(
            neg in any::<bool>(),
            int in "[0-9]{0,12}",
            frac in proptest::option::of("[0-9]{0,12}"),
            exp in proptest::option::of(-40i32..40),
        ) {
            let mut s = String::from(if neg { "-" } else { "" });
            s += &int;
            if let Some(f) = &frac {
                s.push('.');
                s += f;
            }
            if let Some(e) = exp {
                s += &format!("e{e}");
            }
            prop_assert_eq!(parse_f32(s.as_bytes()).map(f32::to_bits), reference(&s), "{}", s);
        }

        #[test]
        fn any_float_printed_reads_back_exactly(bits in any::<u32>()) {
            let x = f32::from_bits(bits);
            prop_assume!(x.is_finite());
            for s in [format!("{x}"), format!("{x:e}"), format!("{:.9}", x), ryu::Buffer::new().format(x).to_string()] {
                prop_assert_eq!(parse_f32(s.as_bytes()).map(f32::to_bits), reference(&s), "{}", s);
            }
        }
    }
}
