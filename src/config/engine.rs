//! Engine sections: `engine`, `broker`, `presence_manager` and the Redis and NATS objects
//! they carry.
//!
//! Owns: these key names and their defaults. Must not: decide which broker or presence
//! manager is in use (that is `Config::engines` in `mod.rs`), validate values
//! (`validate.rs`), or import from `mod.rs`, which re-exports these types.

use std::time::Duration;

use serde::de::MapAccess;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::codec::{self, GoDuration, OneOrMany, Plain, Section, SectionVisitor};
use super::section::section;
use super::tls::Tls;

section! {
    /// `engine.*`.
    pub struct Engine {
        /// `memory` (one node) or `redis` (broker and presence manager in Redis).
        type_ ["type"]: String [Plain] = "memory".to_owned(),
        /// Redis settings for `type: redis`.
        redis: Redis [Plain] = Redis::default(),
    }
}

section! {
    /// `broker.*`: a broker other than the engine's.
    pub struct Broker {
        /// Use this section instead of the engine's broker.
        enabled: bool [Plain] = false,
        /// `memory`, `redis` or `nats` (Rotor: `nats`, or the engine's own type).
        type_ ["type"]: String [Plain] = "memory".to_owned(),
        /// Redis settings for `type: redis`.
        redis: Redis [Plain] = Redis::default(),
        /// NATS settings for `type: nats`.
        nats: Nats [Plain] = Nats::default(),
    }
}

section! {
    /// `broker.nats.*`.
    pub struct Nats {
        /// `nats://[user:password@]host[:port]`.
        url: String [Plain] = "nats://localhost:4222".to_owned(),
        /// Subject prefix.
        prefix: String [Plain] = "centrifugo".to_owned(),
        /// Time to connect.
        dial_timeout: Duration [GoDuration] = Duration::from_secs(1),
        /// Time a write may take.
        write_timeout: Duration [GoDuration] = Duration::from_secs(1),
        /// TLS to the NATS server (a `tls://` URL turns it on too).
        tls: Tls [Plain] = Tls::default(),
    }
}

section! {
    /// `presence_manager.*`: a presence manager other than the engine's.
    pub struct PresenceManager {
        /// Use this section instead of the engine's presence manager.
        enabled: bool [Plain] = false,
        /// `memory` or `redis`.
        type_ ["type"]: String [Plain] = "memory".to_owned(),
        /// Redis settings for `type: redis`.
        redis: Redis [Plain] = Redis::default(),
    }
}

section! {
    /// A Redis object (`engine.redis`): where Redis is and how its keys are named.
    pub struct Redis {
        /// `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS) or `host:port`; several
        /// entries shard channels over several Redis servers. One entry may instead be
        /// `redis+cluster://host:port?addr=host2:port2` (cluster seeds) or
        /// `redis+sentinel://host:port?sentinel_master_name=m&addr=…` (Sentinels), with
        /// `rediss+` variants for TLS. One bare string is accepted too.
        address: Vec<String> [OneOrMany] = vec!["redis://127.0.0.1:6379".to_owned()],
        /// Key and PUB/SUB channel prefix, shared with Centrifugo nodes on the same Redis.
        prefix: String [Plain] = "centrifugo".to_owned(),
        /// Time to establish a connection.
        connect_timeout: Duration [GoDuration] = Duration::from_secs(1),
        /// Time to wait for a reply before the connection is considered broken.
        io_timeout: Duration [GoDuration] = Duration::from_secs(4),
        /// Database number (when the address does not carry one).
        db: u32 [Plain] = 0,
        /// ACL user (when the address does not carry one).
        user: String [Plain] = String::new(),
        /// Password (when the address does not carry one).
        password: String [Plain] = String::new(),
        /// `CLIENT SETNAME` value.
        client_name: String [Plain] = String::new(),
        /// Redis Cluster seed addresses (`host:port`); when set, the masters and their slots
        /// are read from the first that answers at start, and `address` is not used.
        cluster_address: Vec<String> [OneOrMany] = Vec::new(),
        /// Rotor-only: with `cluster_address`, carry channel messages over sharded PUB/SUB
        /// (`SSUBSCRIBE`/`SPUBLISH`, Redis ≥ 7) so each stays on its slot's master. Centrifugo
        /// nodes cannot share a cluster used this way.
        sharded_pubsub: bool [Plain] = false,
        /// Redis Sentinel addresses (`host:port`); when set, the master named
        /// `sentinel_master_name` is asked of them and `address` is not used.
        sentinel_address: Vec<String> [OneOrMany] = Vec::new(),
        /// The monitored master's name.
        sentinel_master_name: String [Plain] = String::new(),
        /// ACL user for the Sentinels.
        sentinel_user: String [Plain] = String::new(),
        /// Password for the Sentinels.
        sentinel_password: String [Plain] = String::new(),
        /// `CLIENT SETNAME` on Sentinel connections.
        sentinel_client_name: String [Plain] = String::new(),
        /// Keep history in lists instead of streams (Rotor supports streams only).
        history_use_lists: bool [Plain] = false,
        /// How long a presence entry lives without refresh.
        presence_ttl: Duration [GoDuration] = Duration::from_secs(60),
        /// TLS to the Redis servers (a `rediss://` address turns it on for that address).
        tls: Tls [Plain] = Tls::default(),
        /// TLS to the Sentinels.
        sentinel_tls: Tls [Plain] = Tls::default(),
    }
}
