//! HDR histograms of microseconds: creation with fixed bounds, base64 V2 encoding for the
//! worker→coordinator pipe, merging and percentile extraction.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::error::{Error, Result};

/// Highest trackable value: 60 s in µs (higher values saturate).
const MAX_US: u64 = 60_000_000;

/// An empty histogram of µs, 1 µs … 60 s, 3 significant digits.
pub fn new() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

/// V2-serialises and base64-encodes `h`.
pub fn encode(h: &Histogram<u64>) -> Result<String> {
    let mut buf = Vec::new();
    V2Serializer::new().serialize(h, &mut buf).map_err(|e| Error::Histogram(format!("{e:?}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// Inverse of [`encode`]; an empty string is an empty histogram.
pub fn decode(text: &str) -> Result<Histogram<u64>> {
    if text.is_empty() {
        return Ok(new());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Error::Histogram(format!("base64: {e}")))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| Error::Histogram(format!("{e:?}")))
}

/// Adds `other` into `into`.
pub fn merge(into: &mut Histogram<u64>, other: &Histogram<u64>) -> Result<()> {
    into.add(other).map_err(|e| Error::Histogram(format!("{e:?}")))
}

/// The percentiles reported everywhere (µs).
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

/// Percentiles of `h`.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        count: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_merge() {
        let mut a = new();
        for v in 1..=1000 {
            a.record(v).unwrap();
        }
        let b = decode(&encode(&a).unwrap()).unwrap();
        assert_eq!(b.len(), 1000);
        let mut c = new();
        merge(&mut c, &b).unwrap();
        merge(&mut c, &a).unwrap();
        let p = percentiles(&c);
        assert_eq!(p.count, 2000);
        assert!((495..=505).contains(&p.p50_us));
        assert_eq!(decode("").unwrap().len(), 0);
    }
}
