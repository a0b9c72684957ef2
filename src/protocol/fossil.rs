//! Fossil deltas (spec §11.3): the delta format Centrifugo's SDKs apply to publications of
//! subscriptions that negotiated `delta: "fossil"`.
//!
//! Owns: encoding a delta from a previous payload to the next, and applying one (for tests and
//! for checking our encoder). A delta is text: the target length, then copy (`N@O,`) and insert
//! (`N:bytes`) commands, then the target's checksum (`C;`); numbers are written in a 64-digit
//! alphabet, most significant digit first.
//!
//! Must not: decide when deltas are used (the subscription and the namespace do).

/// Digits of the number encoding, by value.
const DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

/// Window of the rolling hash; matches shorter than this are never looked for.
const WINDOW: usize = 16;
/// [`WINDOW`] for the rolling hash's arithmetic.
const WINDOW_U32: u32 = 16;

/// Why a delta could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The delta ended in the middle of a command.
    #[error("truncated delta")]
    Truncated,
    /// A character that starts no command.
    #[error("unknown delta command")]
    BadCommand,
    /// A copy reaches past the end of the source.
    #[error("copy out of source bounds")]
    OutOfBounds,
    /// The output would exceed the announced size, or ended shorter.
    #[error("output size mismatch")]
    Size,
    /// The output's checksum differs from the announced one.
    #[error("checksum mismatch")]
    Checksum,
}

fn put_int(out: &mut Vec<u8>, mut v: u64) {
    if v == 0 {
        out.push(b'0');
        return;
    }
    let mut digits = [0u8; 11];
    let mut n = 0;
    while v > 0 {
        digits[n] = DIGITS[(v & 63) as usize];
        v >>= 6;
        n += 1;
    }
    out.extend(digits[..n].iter().rev());
}

/// The format's 32-bit checksum: four byte lanes summed, folded big-endian, then the tail.
pub fn checksum(data: &[u8]) -> u32 {
    let mut lanes = [0u32; 4];
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        for (lane, b) in lanes.iter_mut().zip(c) {
            *lane = lane.wrapping_add(u32::from(*b));
        }
    }
    let mut sum = lanes[3]
        .wrapping_add(lanes[2] << 8)
        .wrapping_add(lanes[1] << 16)
        .wrapping_add(lanes[0] << 24);
    for (i, b) in chunks.remainder().iter().enumerate() {
        sum = sum.wrapping_add(u32::from(*b) << (24 - 8 * i));
    }
    sum
}

/// Adler-style hash of a window, rollable one byte at a time.
#[derive(Clone, Copy)]
struct Rolling {
    a: u32,
    b: u32,
}

impl Rolling {
    fn new(window: &[u8]) -> Rolling {
        let (mut a, mut b) = (0u32, 0u32);
        for (i, &x) in window.iter().enumerate() {
            a = a.wrapping_add(u32::from(x));
            // At most WINDOW (16): always fits.
            let weight = u32::try_from(WINDOW - i).unwrap_or(WINDOW_U32);
            b = b.wrapping_add(weight * u32::from(x));
        }
        Rolling { a, b }
    }

    fn roll(&mut self, out: u8, inp: u8) {
        self.a = self.a.wrapping_sub(u32::from(out)).wrapping_add(u32::from(inp));
        self.b = self.b.wrapping_sub(WINDOW_U32 * u32::from(out)).wrapping_add(self.a);
    }

    fn value(self) -> u32 {
        (self.a & 0xffff) | (self.b << 16)
    }
}

fn insert(out: &mut Vec<u8>, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_int(out, bytes.len() as u64);
        out.push(b':');
        out.extend_from_slice(bytes);
    }
}

/// A delta that turns `source` into `target`.
pub fn encode(source: &[u8], target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() / 4 + 16);
    put_int(&mut out, target.len() as u64);
    out.push(b'\n');
    if source.len() > WINDOW && target.len() > WINDOW {
        // Windows of the source at every WINDOW-th offset, by hash.
        let mut index: std::collections::HashMap<u32, Vec<usize>> =
            std::collections::HashMap::with_capacity(source.len() / WINDOW);
        for start in (0..=source.len() - WINDOW).step_by(WINDOW) {
            let h = Rolling::new(&source[start..start + WINDOW]).value();
            index.entry(h).or_default().push(start);
        }
        let mut base = 0; // target bytes before `base` are encoded
        let mut at = 0; // window start in the target
        let mut hash = Rolling::new(&target[0..WINDOW]);
        while at + WINDOW <= target.len() {
            let mut best: Option<(usize, usize, usize)> = None; // (back, len, source start)
            for &s in index.get(&hash.value()).into_iter().flatten() {
                if source[s..s + WINDOW] != target[at..at + WINDOW] {
                    continue;
                }
                let fwd = source[s..].iter().zip(&target[at..]).take_while(|(x, y)| x == y).count();
                let limit = (at - base).min(s);
                let back = (1..=limit).take_while(|k| source[s - k] == target[at - k]).count();
                if best.is_none_or(|(b, l, _)| back + fwd > b + l) {
                    best = Some((back, fwd, s));
                }
            }
            if let Some((back, len, s)) = best {
                insert(&mut out, &target[base..at - back]);
                put_int(&mut out, (back + len) as u64);
                out.push(b'@');
                put_int(&mut out, (s - back) as u64);
                out.push(b',');
                base = at + len;
                at = base;
                if at + WINDOW <= target.len() {
                    hash = Rolling::new(&target[at..at + WINDOW]);
                }
                continue;
            }
            if at + WINDOW >= target.len() {
                break;
            }
            hash.roll(target[at], target[at + WINDOW]);
            at += 1;
        }
        insert(&mut out, &target[base..]);
    } else {
        insert(&mut out, target);
    }
    put_int(&mut out, u64::from(checksum(target)));
    out.push(b';');
    out
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn int(&mut self) -> Result<u64, DeltaError> {
        let mut v: u64 = 0;
        let mut n = 0;
        while let Some(d) = self.rest.first().and_then(|c| DIGITS.iter().position(|x| x == c)) {
            v = v.checked_mul(64).and_then(|v| v.checked_add(d as u64)).ok_or(DeltaError::Size)?;
            self.rest = &self.rest[1..];
            n += 1;
        }
        if n == 0 {
            return Err(DeltaError::Truncated);
        }
        Ok(v)
    }

    fn byte(&mut self) -> Result<u8, DeltaError> {
        let (&b, rest) = self.rest.split_first().ok_or(DeltaError::Truncated)?;
        self.rest = rest;
        Ok(b)
    }
}

/// Applies `delta` to `source`.
pub fn apply(source: &[u8], delta: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut r = Reader { rest: delta };
    let size = usize::try_from(r.int()?).map_err(|_| DeltaError::Size)?;
    if r.byte()? != b'\n' {
        return Err(DeltaError::BadCommand);
    }
    let mut out = Vec::with_capacity(size.min(1 << 26));
    loop {
        let n = usize::try_from(r.int()?).map_err(|_| DeltaError::Size)?;
        match r.byte()? {
            b'@' => {
                let from = usize::try_from(r.int()?).map_err(|_| DeltaError::Size)?;
                if r.byte()? != b',' {
                    return Err(DeltaError::BadCommand);
                }
                let end = from.checked_add(n).filter(|e| *e <= source.len());
                let end = end.ok_or(DeltaError::OutOfBounds)?;
                if out.len() + n > size {
                    return Err(DeltaError::Size);
                }
                out.extend_from_slice(&source[from..end]);
            }
            b':' => {
                if out.len() + n > size || r.rest.len() < n {
                    return Err(if r.rest.len() < n {
                        DeltaError::Truncated
                    } else {
                        DeltaError::Size
                    });
                }
                out.extend_from_slice(&r.rest[..n]);
                r.rest = &r.rest[n..];
            }
            b';' => {
                if out.len() != size {
                    return Err(DeltaError::Size);
                }
                if u64::from(checksum(&out)) != n as u64 {
                    return Err(DeltaError::Checksum);
                }
                return Ok(out);
            }
            _ => return Err(DeltaError::BadCommand),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_use_the_64_digit_alphabet() {
        let mut out = Vec::new();
        for v in [0u64, 9, 10, 36, 63, 64, 4095] {
            put_int(&mut out, v);
            out.push(b' ');
        }
        assert_eq!(out, b"0 9 A _ ~ 10 ~~ ");
    }

    #[test]
    fn checksum_folds_lanes_and_the_tail() {
        assert_eq!(checksum(b""), 0);
        assert_eq!(checksum(b"\x01"), 1 << 24);
        assert_eq!(checksum(b"\x01\x02\x03\x04"), 0x0102_0304);
        assert_eq!(checksum(b"\x01\x02\x03\x04\x05"), 0x0102_0304 + (5 << 24));
    }

    #[test]
    fn a_small_change_to_a_large_document_is_a_small_delta() {
        let a: Vec<u8> = (0..4000)
            .map(|i: usize| {
                b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36] ^ (i / 36).to_le_bytes()[0]
            })
            .collect();
        let mut b = a.clone();
        b[2000] ^= 0x55;
        b.extend_from_slice(b"tail");
        let d = encode(&a, &b);
        assert!(d.len() < 64, "{} bytes: {}", d.len(), String::from_utf8_lossy(&d));
        assert_eq!(apply(&a, &d).unwrap(), b);
    }

    #[test]
    fn corrupt_deltas_are_errors() {
        let d = encode(b"the quick brown fox jumps over", b"the quick brown cat jumps over");
        assert_eq!(
            apply(b"the quick brown fox jumps over", &d[..d.len() - 1]),
            Err(DeltaError::Truncated)
        );
        let mut bad = d.clone();
        let semi = bad.len() - 1;
        bad[semi - 1] = if bad[semi - 1] == b'0' { b'1' } else { b'0' };
        assert_eq!(apply(b"the quick brown fox jumps over", &bad), Err(DeltaError::Checksum));
        assert_eq!(apply(b"", b"5\n3@0,"), Err(DeltaError::OutOfBounds));
    }

    #[test]
    fn the_fixtures_the_sdk_suite_decodes_are_what_we_encode() {
        // tests/compat applies these deltas with the official SDK's own fossil decoder.
        let text = include_str!("../../tests/compat/fossil-fixtures.json");
        let cases: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        assert!(cases.len() >= 3);
        let bytes = |v: &serde_json::Value| -> Vec<u8> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| u8::try_from(x.as_u64().unwrap()).unwrap())
                .collect()
        };
        for c in &cases {
            let (a, b, d) = (bytes(&c["a"]), bytes(&c["b"]), bytes(&c["d"]));
            assert_eq!(encode(&a, &b), d);
            assert_eq!(apply(&a, &d).unwrap(), b);
        }
    }

    fn related() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        (
            proptest::collection::vec(any::<u8>(), 0..600),
            proptest::collection::vec((any::<u16>(), any::<u8>()), 0..12),
        )
            .prop_map(|(a, edits)| {
                let mut b = a.clone();
                for (pos, byte) in edits {
                    if b.is_empty() {
                        b.push(byte);
                        continue;
                    }
                    let i = usize::from(pos) % b.len();
                    match byte % 3 {
                        0 => b[i] = byte,
                        1 => b.insert(i, byte),
                        _ => {
                            b.remove(i);
                        }
                    }
                }
                (a, b)
            })
    }

    proptest! {
        #[test]
        fn apply_inverts_encode_for_related_inputs((a, b) in related()) {
            prop_assert_eq!(apply(&a, &encode(&a, &b)).unwrap(), b);
        }

        #[test]
        fn apply_inverts_encode_for_unrelated_inputs(
            a in proptest::collection::vec(any::<u8>(), 0..300),
            b in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            prop_assert_eq!(apply(&a, &encode(&a, &b)).unwrap(), b);
        }

        #[test]
        fn apply_never_panics(src in proptest::collection::vec(any::<u8>(), 0..50), d in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = apply(&src, &d);
        }
    }
}
