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
