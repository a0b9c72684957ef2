//! Publication payloads: a JSON object carrying the send timestamp, padded to an exact size,
//! and the fast scan that finds the timestamp again in a delivered frame.

/// Builds `{"ts":T,"seq":S,"pad":"xxx…"}` of exactly `size` bytes when `size` is large enough
/// for the fixed part; otherwise the shortest form (no padding).
pub fn build(ts_ns: u64, seq: u64, size: usize) -> String {
    let head = format!("{{\"ts\":{ts_ns},\"seq\":{seq},\"pad\":\"");
    let fixed = head.len() + 2; // closing `"}`
    let pad = size.saturating_sub(fixed);
    let mut s = String::with_capacity(fixed + pad);
    s.push_str(&head);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// Builds a realistic application message of at most `size` bytes (at least one item):
/// `{"ts":T,"seq":S,"type":"orders.updated","items":[{"id":…,"sku":…,"name":…,"qty":…,
/// "price":…,"currency":"EUR","status":…,"updated_at":…},…]}`. Field names repeat and values
/// vary (a small PRNG seeded by `seq`), so it compresses the way app JSON does, not like
/// random bytes or a run of one letter.
pub fn build_app_json(ts_ns: u64, seq: u64, size: usize) -> String {
    const NAMES: [&str; 8] = [
        "Espresso beans 1kg",
        "Oat milk 6-pack",
        "Ceramic pour-over dripper",
        "Paper filters (100)",
        "Burr grinder",
        "Glass carafe 600ml",
        "Travel mug, steel",
        "Descaling tablets",
    ];
    const STATUS: [&str; 4] = ["pending", "paid", "shipped", "delivered"];
    let mut s = format!("{{\"ts\":{ts_ns},\"seq\":{seq},\"type\":\"orders.updated\",\"items\":[");
    let mut x = seq.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for i in 0.. {
        let item = format!(
            "{}{{\"id\":{},\"sku\":\"SKU-{:05}\",\"name\":\"{}\",\"qty\":{},\"price\":{}.{:02},\
             \"currency\":\"EUR\",\"status\":\"{}\",\"updated_at\":\"2026-12-03T18:{:02}:{:02}Z\"}}",
            if i == 0 { "" } else { "," },
            100_000 + next(900_000),
            next(100_000),
            NAMES[next(8) as usize],
            1 + next(5),
            1 + next(200),
            next(100),
            STATUS[next(4) as usize],
            next(60),
            next(60),
        );
        if i > 0 && s.len() + item.len() + 2 > size {
            break;
        }
        s.push_str(&item);
    }
    s.push_str("]}");
    s
}

/// Finds `"ts":<digits>` in `text` and returns the number.
pub fn extract_ts(text: &str) -> Option<u64> {
    let at = text.find("\"ts\":")? + 5;
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_size_and_round_trip() {
        for size in [60, 100, 1000] {
            let p = build(123_456_789_012, 7, size);
            assert_eq!(p.len(), size);
            let v: serde_json::Value = serde_json::from_str(&p).unwrap();
            assert_eq!(v["ts"], 123_456_789_012_u64);
            assert_eq!(extract_ts(&p), Some(123_456_789_012));
        }
    }

    #[test]
    fn app_json_is_valid_bounded_and_compressible() {
        use std::io::Write as _;
        let p = build_app_json(99, 3, 2048);
        assert!(p.len() <= 2048 && p.len() > 1800, "{}", p.len());
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert!(v["items"].as_array().unwrap().len() > 5);
        assert_eq!(extract_ts(&p), Some(99));
        assert_ne!(p, build_app_json(99, 4, 2048));
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(p.as_bytes()).unwrap();
        let packed = z.finish().unwrap().len();
        assert!(packed * 2 < p.len() && packed * 8 > p.len(), "{packed} of {}", p.len());
        assert!(build_app_json(1, 1, 10).contains("\"items\":[{"));
    }

    #[test]
    fn small_size_is_minimal() {
        let p = build(1, 2, 0);
        assert_eq!(p, r#"{"ts":1,"seq":2,"pad":""}"#);
    }

    #[test]
    fn ts_inside_push() {
        let push = r#"{"push":{"channel":"bench","pub":{"data":{"ts":42,"seq":1,"pad":""}}}}"#;
        assert_eq!(extract_ts(push), Some(42));
        assert_eq!(extract_ts("{}"), None);
    }
}
