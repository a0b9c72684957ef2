//! How single config values are read from and written to the generic value tree: the
//! `Section` plumbing used by every config struct, plus codecs for Go durations and ports.
//! Owns value conversion only; it must not know which keys exist (those are the section
//! files: `client.rs`, `channel.rs`, `transport.rs`, `engine.rs`, `server.rs`).

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserializer, Serialize, Serializer};

use super::duration;

/// A config object whose keys are read one by one, so wrapper structs (a namespace is
/// `name` plus channel options side by side) can delegate keys without `#[serde(flatten)]`,
/// which would hide unknown keys and error paths from `serde_ignored`/`serde_path_to_error`.
pub(crate) trait Section: Default {
    /// Reads the value of `key` if it belongs to this section; `Ok(false)` otherwise (the
    /// value is then still pending in `map`).
    fn read_key<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error>;
    /// Writes every key with its current value.
    fn write_keys<M: serde::ser::SerializeMap>(&self, map: &mut M) -> Result<(), M::Error>;
}

/// Visits an object (or `null`, meaning "all defaults", as YAML writes `client:`).
pub(crate) struct SectionVisitor<T>(PhantomData<fn() -> T>);

impl<T> SectionVisitor<T> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<'de, T: Section> Visitor<'de> for SectionVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut section = T::default();
        while let Some(key) = map.next_key::<String>()? {
            if !section.read_key(&key, &mut map)? {
                // Goes through serde_ignored, which records the path as an unknown key.
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(section)
    }
}

/// Conversion of one field type between the value tree and Rust.
pub(crate) trait Codec<T> {
    fn de<'de, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error>;
    fn ser<S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error>;
}

/// The type's own serde implementation.
pub(crate) struct Plain;

impl<T: Serialize + DeserializeOwned> Codec<T> for Plain {
    fn de<'de, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
        T::deserialize(deserializer)
    }
    fn ser<S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
        value.serialize(serializer)
    }
}

/// A list of strings that also accepts one bare string (Centrifugo's Redis `address`).
pub(crate) struct OneOrMany;

impl Codec<Vec<String>> for OneOrMany {
    fn de<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(String),
            Many(Vec<String>),
        }
        match <Either as serde::Deserialize>::deserialize(deserializer) {
            Ok(Either::One(s)) => Ok(vec![s]),
            Ok(Either::Many(v)) => Ok(v),
            Err(_) => Err(de::Error::custom("expected a string or a list of strings")),
        }
    }
    fn ser<S: Serializer>(value: &Vec<String>, serializer: S) -> Result<S::Ok, S::Error> {
        value.serialize(serializer)
    }
}

/// Non-negative Go duration: string (`"25s"`) or number of nanoseconds.
pub(crate) struct GoDuration;

/// Go duration where any negative value (`-1`, `"-1"`, `"-1s"`) means "disabled" and is
/// stored as `Duration::ZERO` (Centrifugo's convention for ping_interval/pong_timeout).
pub(crate) struct DisablableDuration;

impl Codec<Duration> for GoDuration {
    fn de<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let nanos = deserializer.deserialize_any(NanosVisitor)?;
        let nanos = u64::try_from(nanos).map_err(|_| {
            de::Error::custom(format!(
                "negative duration {} is not allowed here",
                nanos_text(nanos)
            ))
        })?;
        Ok(Duration::from_nanos(nanos))
    }
    fn ser<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&duration::format(*value))
    }
}

impl Codec<Duration> for DisablableDuration {
    fn de<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let nanos = deserializer.deserialize_any(NanosVisitor)?;
        // Negative = disabled; the range check already happened in the visitor.
        Ok(u64::try_from(nanos).map_or(Duration::ZERO, Duration::from_nanos))
    }
    fn ser<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        GoDuration::ser(value, serializer)
    }
}

fn nanos_text(nanos: i128) -> String {
    let magnitude = duration::format(Duration::from_nanos(
        u64::try_from(nanos.unsigned_abs()).unwrap_or(u64::MAX),
    ));
    if nanos < 0 {
        format!("-{magnitude}")
    } else {
        magnitude
    }
}

/// Reads a duration as signed nanoseconds.
struct NanosVisitor;

impl Visitor<'_> for NanosVisitor {
    type Value = i128;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string like \"25s\" or a number of nanoseconds")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
        Ok(i128::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
        i64::try_from(v)
            .map(i128::from)
            .map_err(|_| E::custom("duration overflows int64 nanoseconds"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i128, E> {
        // YAML/TOML may hand whole numbers over as floats; fractions of a nanosecond are not
        // representable in Go either.
        if v.fract() == 0.0 && v.abs() <= i64::MAX as f64 {
            Ok(v as i128)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
        duration::parse_nanos(v).map_err(E::custom)
    }
}

/// TCP port given as a number or a numeric string (`"8000"`).
pub(crate) struct Port;

/// Like [`Port`], but also accepts `""` (Centrifugo's "not set") as 0 and prints 0 as `""`.
pub(crate) struct OptionalPort;

impl Codec<u16> for Port {
    fn de<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
        match deserializer.deserialize_any(PortVisitor)? {
            Some(port) => Ok(port),
            None => Err(de::Error::custom("invalid port \"\": expected a number 0..=65535")),
        }
    }
    fn ser<S: Serializer>(value: &u16, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(*value)
    }
}

impl Codec<u16> for OptionalPort {
    fn de<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
        Ok(deserializer.deserialize_any(PortVisitor)?.unwrap_or(0))
    }
    fn ser<S: Serializer>(value: &u16, serializer: S) -> Result<S::Ok, S::Error> {
        if *value == 0 {
            serializer.serialize_str("")
        } else {
            serializer.serialize_str(&value.to_string())
        }
    }
}

/// `None` stands for the empty string.
struct PortVisitor;

impl Visitor<'_> for PortVisitor {
    type Value = Option<u16>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port number 0..=65535 (number or numeric string)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        u16::try_from(v).map(Some).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u16::try_from(v).map(Some).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if v.fract() == 0.0 && (0.0..=65535.0).contains(&v) {
            Ok(Some(v as u16))
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let trimmed = v.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        trimmed
            .parse::<u16>()
            .map(Some)
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// Runs a [`Codec`] as a `DeserializeSeed`, keeping the caller's path-tracking wrappers.
pub(crate) struct Seed<C, T>(PhantomData<fn() -> (C, T)>);

impl<C, T> Seed<C, T> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<'de, C: Codec<T>, T> DeserializeSeed<'de> for Seed<C, T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        C::de(deserializer)
    }
}

/// Serializes a borrowed value through a [`Codec`].
pub(crate) struct Ser<'a, C, T>(&'a T, PhantomData<fn() -> C>);

impl<'a, C, T> Ser<'a, C, T> {
    pub(crate) fn new(value: &'a T) -> Self {
        Self(value, PhantomData)
    }
}

impl<C: Codec<T>, T> Serialize for Ser<'_, C, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        C::ser(self.0, serializer)
    }
}
