//! Publication tags filters (`SubscribeRequest.tf`, namespace `allow_tags_filter`): the tree a
//! subscriber sends, checked once at subscribe, and its evaluation against a publication's
//! tags, with the protocol's operators and the centrifuge library's semantics (a numeric
//! comparison with a missing or non-numeric value is false; `nin` and `neq` hold for a missing
//! key).
//!
//! Owns: validation and matching. Must not: know about subscribers (the hub groups them by
//! filter, so each distinct filter is evaluated once per publication per shard).

use std::cmp::Ordering;

use crate::protocol::pb::FilterNode;

/// A validated filter. Two subscribers with equal trees share one group in the hub.
#[derive(Debug, Clone, PartialEq)]
pub struct TagsFilter(FilterNode);

/// Why a filter tree was refused (the subscribe gets 107).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// A node's shape or operator is wrong.
    #[error("invalid tags filter: {0}")]
    Invalid(&'static str),
}

/// Deepest tree accepted: real filters are a few levels; this bounds the recursion.
const MAX_DEPTH: usize = 32;

impl TagsFilter {
    /// Checks the tree as upstream's `filter.Validate` does.
    pub fn new(node: FilterNode) -> Result<TagsFilter, FilterError> {
        validate(&node, 0)?;
        Ok(TagsFilter(node))
    }

    /// Whether a publication with `tags` (sorted by key) passes.
    pub fn matches(&self, tags: &[(String, String)]) -> bool {
        matches(&self.0, tags)
    }
}

fn validate(f: &FilterNode, depth: usize) -> Result<(), FilterError> {
    use FilterError::Invalid;
    if depth > MAX_DEPTH {
        return Err(Invalid("nested too deep"));
    }
    match f.op.as_str() {
        "" => {
            match f.cmp.as_str() {
                "eq" | "neq" | "sw" | "ew" | "ct" | "gt" | "gte" | "lt" | "lte" => {
                    if f.val.is_empty() {
                        return Err(Invalid("this comparison requires val"));
                    }
                    if !f.vals.is_empty() {
                        return Err(Invalid("this comparison must not use vals"));
                    }
                }
                "in" | "nin" => {
                    if f.vals.is_empty() {
                        return Err(Invalid("in/nin require non-empty vals"));
                    }
                    if !f.val.is_empty() {
                        return Err(Invalid("in/nin must not use val"));
                    }
                }
                "ex" | "nex" => {
                    if !f.val.is_empty() || !f.vals.is_empty() {
                        return Err(Invalid("ex/nex must not use val or vals"));
                    }
                }
                "" => return Err(Invalid("leaf node must have cmp set")),
                _ => return Err(Invalid("unknown comparison operator")),
            }
            if f.key.is_empty() && f.cmp != "ex" && f.cmp != "nex" {
                return Err(Invalid("leaf node requires key"));
            }
            Ok(())
        }
        "and" | "or" => {
            if f.nodes.is_empty() {
                return Err(Invalid("and/or need at least one child"));
            }
            f.nodes.iter().try_for_each(|c| validate(c, depth + 1))
        }
        "not" => match f.nodes.as_slice() {
            [child] => validate(child, depth + 1),
            _ => Err(Invalid("not needs exactly one child")),
        },
        _ => Err(Invalid("unknown op")),
    }
}

fn tag<'t>(tags: &'t [(String, String)], key: &str) -> Option<&'t str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn matches(f: &FilterNode, tags: &[(String, String)]) -> bool {
    match f.op.as_str() {
        "and" => f.nodes.iter().all(|c| matches(c, tags)),
        "or" => f.nodes.iter().any(|c| matches(c, tags)),
        "not" => f.nodes.first().is_some_and(|c| !matches(c, tags)),
        _ => {
            let value = tag(tags, &f.key);
            let text = |p: fn(&str, &str) -> bool| value.is_some_and(|v| p(v, &f.val));
            match f.cmp.as_str() {
                "eq" => value == Some(f.val.as_str()),
                "neq" => value != Some(f.val.as_str()),
                // A missing key compares as the empty string, as upstream's map lookup does.
                "in" => f.vals.iter().any(|v| v == value.unwrap_or("")),
                "nin" => !f.vals.iter().any(|v| v == value.unwrap_or("")),
                "ex" => value.is_some(),
                "nex" => value.is_none(),
                "sw" => text(|v, p| v.starts_with(p)),
                "ew" => text(|v, p| v.ends_with(p)),
                "ct" => text(|v, p| v.contains(p)),
                cmp => {
                    let Some(order) = value.and_then(|v| compare_decimals(v, &f.val)) else {
                        return false;
                    };
                    match cmp {
                        "gt" => order == Ordering::Greater,
                        "gte" => order != Ordering::Less,
                        "lt" => order == Ordering::Less,
                        "lte" => order != Ordering::Greater,
                        _ => false,
                    }
                }
            }
        }
    }
}

/// A decimal number: sign, integer digits without leading zeros, fraction digits without
/// trailing zeros. Exact, like upstream's decimal type (no float rounding).
#[derive(Debug, PartialEq, Eq)]
struct Decimal<'s> {
    negative: bool,
    int: &'s str,
    frac: &'s str,
}

fn parse_decimal(s: &str) -> Option<Decimal<'_>> {
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return None;
    }
    let (int, frac) = (int.trim_start_matches('0'), frac.trim_end_matches('0'));
    // Zero has no sign.
    let negative = negative && !(int.is_empty() && frac.is_empty());
    Some(Decimal { negative, int, frac })
}

fn compare_decimals(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (parse_decimal(a)?, parse_decimal(b)?);
    let magnitude = a
        .int
        .len()
        .cmp(&b.int.len())
        .then_with(|| a.int.cmp(b.int))
        .then_with(|| a.frac.cmp(b.frac));
    Some(match (a.negative, b.negative) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(key: &str, cmp: &str, val: &str) -> FilterNode {
        FilterNode { key: key.into(), cmp: cmp.into(), val: val.into(), ..FilterNode::default() }
    }

    fn set(key: &str, cmp: &str, vals: &[&str]) -> FilterNode {
        let vals = vals.iter().map(|v| (*v).to_owned()).collect();
        FilterNode { key: key.into(), cmp: cmp.into(), vals, ..FilterNode::default() }
    }

    fn node(op: &str, nodes: Vec<FilterNode>) -> FilterNode {
        FilterNode { op: op.into(), nodes, ..FilterNode::default() }
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn every_operator_matches_as_upstream_defines_it() {
        let t = tags(&[("price", "10.50"), ("ticker", "BTC-USD"), ("side", "buy")]);
        let yes = |f: FilterNode| assert!(TagsFilter::new(f.clone()).unwrap().matches(&t), "{f:?}");
        let no = |f: FilterNode| assert!(!TagsFilter::new(f.clone()).unwrap().matches(&t), "{f:?}");
        yes(leaf("side", "eq", "buy"));
        no(leaf("side", "eq", "sell"));
        yes(leaf("side", "neq", "sell"));
        yes(leaf("missing", "neq", "x"));
        yes(set("side", "in", &["sell", "buy"]));
        no(set("missing", "in", &["x"]));
        yes(set("missing", "nin", &["x"]));
        yes(FilterNode { cmp: "ex".into(), key: "ticker".into(), ..FilterNode::default() });
        yes(FilterNode { cmp: "nex".into(), key: "nope".into(), ..FilterNode::default() });
        yes(leaf("ticker", "sw", "BTC"));
        yes(leaf("ticker", "ew", "USD"));
        yes(leaf("ticker", "ct", "C-U"));
        no(leaf("missing", "sw", "B"));
        yes(leaf("price", "gt", "10.4"));
        no(leaf("price", "gt", "10.50"));
        yes(leaf("price", "gte", "10.5"));
        yes(leaf("price", "lt", "10.500001"));
        yes(leaf("price", "lte", "+10.5"));
        yes(leaf("price", "gt", "-11"));
        no(leaf("ticker", "gt", "1"));
        no(leaf("missing", "lt", "1"));
        yes(node("and", vec![leaf("side", "eq", "buy"), leaf("price", "lt", "20")]));
        no(node("and", vec![leaf("side", "eq", "buy"), leaf("price", "gt", "20")]));
        yes(node("or", vec![leaf("side", "eq", "sell"), leaf("price", "lt", "20")]));
        yes(node("not", vec![leaf("side", "eq", "sell")]));
    }

    #[test]
    fn malformed_trees_are_refused() {
        for bad in [
            leaf("k", "", "v"),
            leaf("k", "eq", ""),
            leaf("", "eq", "v"),
            leaf("k", "regex", "v"),
            set("k", "in", &[]),
            FilterNode { val: "v".into(), ..set("k", "in", &["a"]) },
            FilterNode { vals: vec!["x".into()], ..leaf("k", "eq", "v") },
            leaf("k", "ex", "v"),
            node("and", vec![]),
            node("not", vec![leaf("a", "eq", "1"), leaf("b", "eq", "2")]),
            node("xor", vec![leaf("a", "eq", "1")]),
            node("and", vec![leaf("k", "eq", "")]),
        ] {
            assert!(TagsFilter::new(bad.clone()).is_err(), "{bad:?}");
        }
        let mut deep = leaf("a", "eq", "1");
        for _ in 0..40 {
            deep = node("not", vec![deep]);
        }
        assert!(TagsFilter::new(deep).is_err(), "depth is bounded");
    }

    #[test]
    fn decimals_compare_exactly() {
        assert_eq!(compare_decimals("0.1", "0.10"), Some(Ordering::Equal));
        assert_eq!(compare_decimals("-0", "0"), Some(Ordering::Equal));
        assert_eq!(compare_decimals("100", "99.999"), Some(Ordering::Greater));
        assert_eq!(compare_decimals("-2", "-10"), Some(Ordering::Greater));
        assert_eq!(
            compare_decimals("12345678901234567890.1", "12345678901234567890.09"),
            Some(Ordering::Greater)
        );
        assert_eq!(compare_decimals("1e3", "1"), None);
        assert_eq!(compare_decimals(".", "1"), None);
    }
}
