//! Fossil delta delivery (spec §11.3): how a publication reaches a subscription that
//! negotiated `delta: "fossil"`.
//!
//! Owns: the per-publication choice between a full payload and a patch, and the wire form of
//! both (JSON `data` becomes a string; Protobuf keeps bytes). A shard computes one patch per
//! publication, against the previous publication it delivered for the channel (the hub's
//! delta base), and shares the encoded frames among its delta subscribers like any other
//! frame. A subscription gets full payloads until one arrived from the live stream
//! (`SubFlags::DELTA_READY`), so a patch always applies to what that client holds.
//!
//! Must not: delta-encode history answers, or send a JSON client a patch that is not UTF-8.

use std::sync::Arc;

use bytes::Bytes;

use crate::broker::Event;
use crate::client::queue::Out;
use crate::hub::encode::event_out;
use crate::protocol::{fossil, Publication, RawJson};
use crate::transport::Encoding;

/// A patch from `base` to `target`, when it is smaller than `target` (else the full payload
/// goes out, as upstream).
pub fn patch(base: &[u8], target: &[u8]) -> Option<Vec<u8>> {
    Some(fossil::encode(base, target)).filter(|d| d.len() < target.len())
}

/// The publication as a delta subscriber receives it: the full payload or `patch` (then
/// `delta: true`); for JSON the bytes become a JSON string. `None` when JSON cannot carry it
/// (a patch that is not UTF-8).
pub fn publication(p: &Publication, patch: Option<&[u8]>, json: bool) -> Option<Publication> {
    let (bytes, delta) = match patch {
        Some(d) => (d, true),
        None => (p.data.as_bytes(), false),
    };
    let data = if json {
        RawJson::json_string(std::str::from_utf8(bytes).ok()?)
    } else {
        RawJson(Bytes::copy_from_slice(bytes))
    };
    Some(Publication { data, delta, delta_eligible: false, ..p.clone() })
}

/// Recovered publications of a delta subscription's reply: the first full, each next one a
/// patch against the one before when that is eligible and smaller.
pub fn chain(pubs: &[Publication], json: bool) -> Vec<Publication> {
    let mut out = Vec::with_capacity(pubs.len());
    for (i, p) in pubs.iter().enumerate() {
        let d = match i.checked_sub(1).map(|j| &pubs[j]) {
            Some(prev) if p.delta_eligible => patch(prev.data.as_bytes(), p.data.as_bytes()),
            _ => None,
        };
        let encoded = d.as_deref().and_then(|d| publication(p, Some(d), json));
        match encoded.or_else(|| publication(p, None, json)) {
            Some(e) => out.push(e),
            None => out.push(p.clone()),
        }
    }
    out
}

/// A publication push for a delta subscriber in `encoding`; `None` when it cannot be carried
/// (binary data or a non-UTF-8 patch for JSON).
pub fn publication_out(
    channel: &str,
    p: &Publication,
    patch: Option<&[u8]>,
    encoding: Encoding,
) -> Option<Out> {
    let json = encoding != Encoding::Protobuf;
    if json && p.binary {
        return None;
    }
    let form = publication(p, patch, json)?;
    event_out(channel, &Event::Pub(Arc::new(form)), encoding)
}

/// Frames of one publication for a channel with delta subscribers, each built at most once.
pub struct DeltaFrames<'a> {
    channel: &'a str,
    /// Shared as delivered, so plain subscribers get the event without a copy.
    publication: &'a Arc<Publication>,
    patch: Option<Vec<u8>>,
    /// The patch is UTF-8, so JSON subscribers can take it.
    patch_is_text: bool,
    /// `[encoding][plain, full, patch]`.
    cache: [[Option<Option<Out>>; 3]; Encoding::COUNT],
}

impl<'a> DeltaFrames<'a> {
    /// Prepares the frames of `p`; `base` is the previous publication delivered here.
    pub fn new(channel: &'a str, p: &'a Arc<Publication>, base: Option<RawJson>) -> Self {
        let patch =
            base.filter(|_| p.delta_eligible).and_then(|b| patch(b.as_bytes(), p.data.as_bytes()));
        let patch_is_text = patch.as_deref().is_some_and(|d| std::str::from_utf8(d).is_ok());
        DeltaFrames { channel, publication: p, patch, patch_is_text, cache: Default::default() }
    }

    /// The frame for a subscriber: `delta` is `None` for a plain subscription, else whether it
    /// is ready for patches.
    pub fn frame(&mut self, encoding: Encoding, delta: Option<bool>) -> Option<Out> {
        let json = encoding != Encoding::Protobuf;
        let patched = delta == Some(true) && self.patch.is_some() && (!json || self.patch_is_text);
        let form = match delta {
            None => 0,
            Some(_) if patched => 2,
            Some(_) => 1,
        };
        let (channel, p, patch) = (self.channel, self.publication, self.patch.as_deref());
        self.cache[encoding as usize][form]
            .get_or_insert_with(|| match form {
                0 => event_out(channel, &Event::Pub(Arc::clone(p)), encoding),
                1 => publication_out(channel, p, None, encoding),
                _ => publication_out(channel, p, patch, encoding),
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(data: &str, eligible: bool) -> Publication {
        Publication {
            data: RawJson(Bytes::copy_from_slice(data.as_bytes())),
            delta_eligible: eligible,
            ..Publication::default()
        }
    }

    fn big(n: u32) -> String {
        let items: Vec<String> =
            (0..40).map(|i| format!("\"k{i}\":{}", if i == n { 1000 + n } else { i })).collect();
        format!("{{{}}}", items.join(","))
    }

    #[test]
    fn json_delta_publications_carry_strings() {
        let full = publication(&p(r#"{"a":1}"#, true), None, true).unwrap();
        assert_eq!(full.data.as_bytes(), br#""{\"a\":1}""#);
        assert!(!full.delta);
        let d = patch(big(1).as_bytes(), big(2).as_bytes()).expect("a smaller patch");
        let pd = publication(&p(&big(2), true), Some(&d), true).unwrap();
        assert!(pd.delta);
        let text: String = serde_json::from_slice(pd.data.as_bytes()).unwrap();
        assert_eq!(fossil::apply(big(1).as_bytes(), text.as_bytes()).unwrap(), big(2).as_bytes());
        assert!(publication(&p("{}", true), Some(b"\xff"), true).is_none(), "not UTF-8");
        let bin = publication(&p("{}", true), Some(b"\xff"), false).unwrap();
        assert_eq!(bin.data.as_bytes(), b"\xff", "Protobuf keeps bytes");
    }

    #[test]
    fn a_recovered_chain_starts_full_and_patches_eligible_successors() {
        let pubs = vec![p(&big(1), true), p(&big(2), true), p(&big(3), false), p(&big(4), true)];
        let out = chain(&pubs, true);
        assert_eq!(out.iter().map(|p| p.delta).collect::<Vec<_>>(), [false, true, false, true]);
        // Rebuild what an SDK would hold after each one.
        let mut held: Vec<u8> = Vec::new();
        for (orig, got) in pubs.iter().zip(&out) {
            let text: String = serde_json::from_slice(got.data.as_bytes()).unwrap();
            held = if got.delta {
                fossil::apply(&held, text.as_bytes()).unwrap()
            } else {
                text.into_bytes()
            };
            assert_eq!(held, orig.data.as_bytes());
        }
    }

    #[test]
    fn no_patch_when_it_would_not_be_smaller() {
        assert!(patch(b"abc", b"xyz").is_none());
        let one = Arc::new(p("1", true));
        let f = DeltaFrames::new("c", &one, Some(RawJson(Bytes::from_static(b"2"))));
        assert!(f.patch.is_none());
    }
}
