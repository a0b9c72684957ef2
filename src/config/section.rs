//! The macros that declare config sections: a struct with Centrifugo's defaults and its
//! key-by-key serde plumbing.
//!
//! Owns: the shape of the generated code only. Must not: name any section or key (those live
//! in the topic files next to this one), or import from `mod.rs`, which re-exports the
//! sections and would make this leaf part of a cycle.
//!
//! The expansions name `Section`, `SectionVisitor`, `codec::Seed`/`codec::Ser`, `MapAccess`,
//! `SerializeMap` and serde's `Serialize`/`Serializer`/`Deserialize`/`Deserializer` as the
//! call site sees them, so every file declaring sections imports exactly those.

/// Declares a config section: the struct, its `Default` (Centrifugo's defaults) and its
/// key-by-key serde plumbing. Field syntax: `name ["json key"]? : Type [Codec] = default,`.
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident $([$key:literal])? : $ty:ty [$codec:ty] = $default:expr,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        impl Section for $name {
            fn read_key<'de, A: MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                $(
                    if key == section!(@key $field $($key)?) {
                        self.$field = map.next_value_seed(codec::Seed::<$codec, $ty>::new())?;
                        return Ok(true);
                    }
                )*
                Ok(false)
            }

            fn write_keys<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
                $(
                    map.serialize_entry(
                        section!(@key $field $($key)?),
                        &codec::Ser::<$codec, $ty>::new(&self.$field),
                    )?;
                )*
                Ok(())
            }
        }

        $crate::config::section::section_serde!($name);
    };
    (@key $field:ident) => { stringify!($field) };
    (@key $field:ident $key:literal) => { $key };
}

pub(super) use section;

/// Serde of a section through its `Section` impl (both macros above and below use it).
macro_rules! section_serde {
    ($($name:ident),*) => {$(
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                self.write_keys(&mut map)?;
                map.end()
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(SectionVisitor::<Self>::new())
            }
        }
    )*};
}

pub(super) use section_serde;

/// A section made of one key of its own (`$key`, read into `$field`) plus the keys of an inner
/// section side by side: Centrifugo's `mapstructure:",squash"` (a namespace's `name`, a
/// proxy's `enabled` or `name`, `subscription_token.enabled`).
macro_rules! side_by_side {
    ($name:ident { $field:ident: $key:literal, $inner:ident }) => {
        impl Section for $name {
            fn read_key<'de, A: MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                if key == $key {
                    self.$field = map.next_value()?;
                    return Ok(true);
                }
                self.$inner.read_key(key, map)
            }

            fn write_keys<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
                map.serialize_entry($key, &self.$field)?;
                self.$inner.write_keys(map)
            }
        }

        $crate::config::section::section_serde!($name);
    };
}

pub(super) use side_by_side;
