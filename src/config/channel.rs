//! Channel sections: `channel.*`, the per-namespace [`ChannelOptions`] and the
//! `channel.namespaces[]` entries.
//!
//! Owns: these key names and their defaults. Must not: resolve channel names to namespaces
//! (that is `crate::channel`), validate values (`validate.rs`), or import from `mod.rs`,
//! which re-exports these types.

use std::time::Duration;

use serde::de::MapAccess;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::codec::{self, GoDuration, Plain, Section, SectionVisitor};
use super::proxy::ChannelProxies;
use super::section::{section, side_by_side};

section! {
    /// `channel.*`.
    pub struct Channel {
        /// Options of channels without a namespace.
        without_namespace: ChannelOptions [Plain] = ChannelOptions::default(),
        /// Namespaces.
        namespaces: Vec<Namespace> [Plain] = Vec::new(),
        /// Default lifetime of stream meta for namespaces that set 0.
        history_meta_ttl: Duration [GoDuration] = Duration::from_secs(720 * 3600),
        /// Published data validation: "", json, json_object, binary.
        publication_data_format: String [Plain] = String::new(),
        /// Max channel name length in bytes.
        max_length: usize [Plain] = 255,
        /// Private channel prefix.
        private_prefix: String [Plain] = "$".to_owned(),
        /// Separates namespace from the rest of the channel name.
        namespace_boundary: String [Plain] = ":".to_owned(),
        /// Starts the user list of user-limited channels.
        user_boundary: String [Plain] = "#".to_owned(),
        /// Separates users in user-limited channels.
        user_separator: String [Plain] = ",".to_owned(),
        /// The proxies namespaces call `default` (spec §9).
        proxy: ChannelProxies [Plain] = ChannelProxies::default(),
    }
}

section! {
    /// Per-namespace channel options (spec §5.3). All off/empty by default, except proxy
    /// names which default to `"default"` as in Centrifugo.
    pub struct ChannelOptions {
        /// Maintain presence.
        presence: bool [Plain] = false,
        /// Publish join/leave events.
        join_leave: bool [Plain] = false,
        /// Push join/leave to all subscribers.
        force_push_join_leave: bool [Plain] = false,
        /// Publications kept in history; set together with `history_ttl`.
        history_size: usize [Plain] = 0,
        /// History retention (whole seconds).
        history_ttl: Duration [GoDuration] = Duration::ZERO,
        /// Stream meta lifetime; ZERO = `channel.history_meta_ttl`.
        history_meta_ttl: Duration [GoDuration] = Duration::ZERO,
        /// Positioning for every subscriber.
        force_positioning: bool [Plain] = false,
        /// Clients may ask for positioning.
        allow_positioning: bool [Plain] = false,
        /// Recovery for every subscriber (needs history).
        force_recovery: bool [Plain] = false,
        /// Clients may ask for recovery (needs history).
        allow_recovery: bool [Plain] = false,
        /// "" (= stream), "stream" or "cache".
        force_recovery_mode: String [Plain] = String::new(),
        /// Cache mode: deliver the latest publication on every subscribe.
        auto_cache_recover: bool [Plain] = false,
        /// Delta types clients may negotiate; only "fossil".
        allowed_delta_types: Vec<String> [Plain] = Vec::new(),
        /// Every publication is delta-eligible.
        delta_publish: bool [Plain] = false,
        /// Clients may send tags filters.
        allow_tags_filter: bool [Plain] = false,
        /// Authenticated users may subscribe.
        allow_subscribe_for_client: bool [Plain] = false,
        /// Anonymous users may subscribe too.
        allow_subscribe_for_anonymous: bool [Plain] = false,
        /// Authenticated users may publish.
        allow_publish_for_client: bool [Plain] = false,
        /// Subscribers may publish.
        allow_publish_for_subscriber: bool [Plain] = false,
        /// Extend publish permissions to anonymous users.
        allow_publish_for_anonymous: bool [Plain] = false,
        /// Authenticated users may query presence.
        allow_presence_for_client: bool [Plain] = false,
        /// Subscribers may query presence.
        allow_presence_for_subscriber: bool [Plain] = false,
        /// Extend presence permissions to anonymous users.
        allow_presence_for_anonymous: bool [Plain] = false,
        /// Authenticated users may query history.
        allow_history_for_client: bool [Plain] = false,
        /// Subscribers may query history.
        allow_history_for_subscriber: bool [Plain] = false,
        /// Extend history permissions to anonymous users.
        allow_history_for_anonymous: bool [Plain] = false,
        /// Honour `#user1,user2` channel suffixes.
        allow_user_limited_channels: bool [Plain] = false,
        /// RE2 regex the post-namespace part must match in client subscribe/publish
        /// (presence/history once those exist); allows non-ASCII names.
        channel_regex: String [Plain] = String::new(),
        /// Overrides `channel.publication_data_format`.
        publication_data_format: String [Plain] = String::new(),
        /// Subscribe permission through a proxy.
        subscribe_proxy_enabled: bool [Plain] = false,
        /// Proxy used for subscribe.
        subscribe_proxy_name: String [Plain] = "default".to_owned(),
        /// Publish through a proxy.
        publish_proxy_enabled: bool [Plain] = false,
        /// Proxy used for publish.
        publish_proxy_name: String [Plain] = "default".to_owned(),
        /// Subscription refresh through a proxy.
        sub_refresh_proxy_enabled: bool [Plain] = false,
        /// Proxy used for sub refresh.
        sub_refresh_proxy_name: String [Plain] = "default".to_owned(),
    }
}

/// One `channel.namespaces[]` entry: `name` plus the [`ChannelOptions`] keys side by side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Namespace {
    /// Namespace name (`^[-a-zA-Z0-9_.]{2,}$`).
    pub name: String,
    /// Its options.
    pub options: ChannelOptions,
}

side_by_side!(Namespace { name: "name", options });
