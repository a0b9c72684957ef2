//! Client protocol codes mirrored from Centrifugo (spec §2.12–§2.14): error replies,
//! unsubscribe pushes and disconnects, as named constants.
//!
//! Owns: every code number, message/reason text and `temporary` flag. Nothing else in the crate
//! may write a magic code number; it must name a constant from here.
//! Must not: decide *when* a code applies (that is the caller's business).

use std::borrow::Cow;

use super::{Disconnect, ProtocolError, Unsubscribe};

const fn error(code: u32, message: &'static str, temporary: bool) -> ProtocolError {
    ProtocolError { code, message: Cow::Borrowed(message), temporary }
}

const fn disconnect(code: u16, reason: &'static str) -> Disconnect {
    Disconnect { code, reason: Cow::Borrowed(reason) }
}

const fn unsubscribe(code: u32, reason: &'static str) -> Unsubscribe {
    Unsubscribe { code, reason: Cow::Borrowed(reason) }
}

// ---- Reply.error (§2.12) -------------------------------------------------------------------

/// 100: server-side failure (temporary).
pub const ERROR_INTERNAL: ProtocolError = error(100, "internal server error", true);
/// 101: defined but not emitted by OSS (missing credentials → disconnect 3501).
pub const ERROR_UNAUTHORIZED: ProtocolError = error(101, "unauthorized", false);
/// 102: namespace not configured.
pub const ERROR_UNKNOWN_CHANNEL: ProtocolError = error(102, "unknown channel", false);
/// 103: permission denied.
pub const ERROR_PERMISSION_DENIED: ProtocolError = error(103, "permission denied", false);
/// 104: RPC / API method unknown.
pub const ERROR_METHOD_NOT_FOUND: ProtocolError = error(104, "method not found", false);
/// 105: already subscribed.
pub const ERROR_ALREADY_SUBSCRIBED: ProtocolError = error(105, "already subscribed", false);
/// 106: e.g. channel limit.
pub const ERROR_LIMIT_EXCEEDED: ProtocolError = error(106, "limit exceeded", false);
/// 107: malformed but parseable request.
pub const ERROR_BAD_REQUEST: ProtocolError = error(107, "bad request", false);
/// 108: feature disabled.
pub const ERROR_NOT_AVAILABLE: ProtocolError = error(108, "not available", false);
/// 109: SDKs fetch a new token and retry.
pub const ERROR_TOKEN_EXPIRED: ProtocolError = error(109, "token expired", false);
/// 110: connection/subscription expired (no token involved).
pub const ERROR_EXPIRED: ProtocolError = error(110, "expired", false);
/// 111: rate limiting (temporary).
pub const ERROR_TOO_MANY_REQUESTS: ProtocolError = error(111, "too many requests", true);
/// 112: history `since` / recovery impossible.
pub const ERROR_UNRECOVERABLE_POSITION: ProtocolError = error(112, "unrecoverable position", false);
/// 113: (ext) map pagination (temporary).
pub const ERROR_CONCURRENT_PAGINATION: ProtocolError = error(113, "concurrent pagination", true);

/// Lowest error code a proxy backend may return.
pub const ERROR_CUSTOM_CODE_MIN: u32 = 400;
/// Highest error code a proxy backend may return.
pub const ERROR_CUSTOM_CODE_MAX: u32 = 1999;

// ---- Push.unsubscribe (§2.13) ----------------------------------------------------------------

/// 0: client unsubscribed (internal only, never sent).
pub const UNSUBSCRIBE_CLIENT: Unsubscribe = unsubscribe(0, "client unsubscribed");
/// 1: client disconnected (internal only, never sent).
pub const UNSUBSCRIBE_DISCONNECT: Unsubscribe = unsubscribe(1, "client disconnected");
/// 2000: API `unsubscribe`; the SDK goes to the unsubscribed state.
pub const UNSUBSCRIBE_SERVER: Unsubscribe = unsubscribe(2000, "server unsubscribe");
/// 2500: message loss on a client-side subscription; the SDK resubscribes with recovery.
pub const UNSUBSCRIBE_INSUFFICIENT_STATE: Unsubscribe = unsubscribe(2500, "insufficient state");
/// 2501: subscription expired; the SDK resubscribes with a fresh token.
pub const UNSUBSCRIBE_EXPIRED: Unsubscribe = unsubscribe(2501, "subscription expired");
/// 2502: the SDK clears token/state and resubscribes.
pub const UNSUBSCRIBE_STATE_INVALIDATED: Unsubscribe = unsubscribe(2502, "state invalidated");

// ---- Disconnects (§2.14) ---------------------------------------------------------------------

/// 3000: internal marker for a plain close; never sent as a close frame.
pub const DISCONNECT_CONNECTION_CLOSED: Disconnect = disconnect(3000, "connection closed");
/// 3001: node shutting down.
pub const DISCONNECT_SHUTDOWN: Disconnect = disconnect(3001, "shutdown");
/// 3004: internal error (e.g. broker failure during subscribe).
pub const DISCONNECT_SERVER_ERROR: Disconnect = disconnect(3004, "internal server error");
/// 3005: connection expired and was not refreshed.
pub const DISCONNECT_EXPIRED: Disconnect = disconnect(3005, "connection expired");
/// 3006: server-side subscription expired.
pub const DISCONNECT_SUBSCRIPTION_EXPIRED: Disconnect = disconnect(3006, "subscription expired");
/// 3008: outbound queue overflow.
pub const DISCONNECT_SLOW: Disconnect = disconnect(3008, "slow");
/// 3009: transport write failed.
pub const DISCONNECT_WRITE_ERROR: Disconnect = disconnect(3009, "write error");
/// 3010: message loss on a server-side subscription.
pub const DISCONNECT_INSUFFICIENT_STATE: Disconnect = disconnect(3010, "insufficient state");
/// 3011: server asks to reconnect.
pub const DISCONNECT_FORCE_RECONNECT: Disconnect = disconnect(3011, "force reconnect");
/// 3012: pong timeout.
pub const DISCONNECT_NO_PONG: Disconnect = disconnect(3012, "no pong");
/// 3013: rate limit.
pub const DISCONNECT_TOO_MANY_REQUESTS: Disconnect = disconnect(3013, "too many requests");
/// 3014: the SDK drops cached token/state and reconnects.
pub const DISCONNECT_STATE_INVALIDATED: Disconnect = disconnect(3014, "state invalidated");
/// 3500: bad connection token; subscription token user/channel/client mismatch.
pub const DISCONNECT_INVALID_TOKEN: Disconnect = disconnect(3500, "invalid token");
/// 3501: protocol violation.
pub const DISCONNECT_BAD_REQUEST: Disconnect = disconnect(3501, "bad request");
/// 3502: no connect within the stale delay.
pub const DISCONNECT_STALE: Disconnect = disconnect(3502, "stale");
/// 3503: API `disconnect` default.
pub const DISCONNECT_FORCE_NO_RECONNECT: Disconnect = disconnect(3503, "force disconnect");
/// 3504: user connection limit.
pub const DISCONNECT_CONNECTION_LIMIT: Disconnect = disconnect(3504, "connection limit");
/// 3505: too many server-side subscriptions.
pub const DISCONNECT_CHANNEL_LIMIT: Disconnect = disconnect(3505, "channel limit");
/// 3506: e.g. binary data to a JSON client.
pub const DISCONNECT_INAPPROPRIATE_PROTOCOL: Disconnect =
    disconnect(3506, "inappropriate protocol");
/// 3507: e.g. anonymous token when anonymous connection tokens are disallowed.
pub const DISCONNECT_PERMISSION_DENIED: Disconnect = disconnect(3507, "permission denied");
/// 3508: e.g. `send` without a message handler.
pub const DISCONNECT_NOT_AVAILABLE: Disconnect = disconnect(3508, "not available");
/// 3509: too many errors.
pub const DISCONNECT_TOO_MANY_ERRORS: Disconnect = disconnect(3509, "too many errors");

/// Default mapping of a connect error on a unidirectional transport (which cannot carry an
/// error reply) to a disconnect (spec §1.6): 109/110 → 3005, 111 → 3013, 103 → 3507,
/// anything else → 3004.
pub fn unidirectional_connect_disconnect(error_code: u32) -> Disconnect {
    match error_code {
        109 | 110 => DISCONNECT_EXPIRED,
        111 => DISCONNECT_TOO_MANY_REQUESTS,
        103 => DISCONNECT_PERMISSION_DENIED,
        _ => DISCONNECT_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_internal_rate_limit_and_pagination_errors_are_temporary() {
        let all = [
            ERROR_INTERNAL,
            ERROR_UNAUTHORIZED,
            ERROR_UNKNOWN_CHANNEL,
            ERROR_PERMISSION_DENIED,
            ERROR_METHOD_NOT_FOUND,
            ERROR_ALREADY_SUBSCRIBED,
            ERROR_LIMIT_EXCEEDED,
            ERROR_BAD_REQUEST,
            ERROR_NOT_AVAILABLE,
            ERROR_TOKEN_EXPIRED,
            ERROR_EXPIRED,
            ERROR_TOO_MANY_REQUESTS,
            ERROR_UNRECOVERABLE_POSITION,
            ERROR_CONCURRENT_PAGINATION,
        ];
        let codes: Vec<u32> = all.iter().map(|e| e.code).collect();
        assert_eq!(codes, (100..=113).collect::<Vec<u32>>());
        let temporary: Vec<u32> = all.iter().filter(|e| e.temporary).map(|e| e.code).collect();
        assert_eq!(temporary, vec![100, 111, 113]);
        assert_eq!(ERROR_PERMISSION_DENIED.message, "permission denied");
    }

    #[test]
    fn reconnect_follows_sdk_code_ranges() {
        let terminal = [
            DISCONNECT_INVALID_TOKEN,
            DISCONNECT_BAD_REQUEST,
            DISCONNECT_STALE,
            DISCONNECT_FORCE_NO_RECONNECT,
            DISCONNECT_CONNECTION_LIMIT,
            DISCONNECT_CHANNEL_LIMIT,
            DISCONNECT_INAPPROPRIATE_PROTOCOL,
            DISCONNECT_PERMISSION_DENIED,
            DISCONNECT_NOT_AVAILABLE,
            DISCONNECT_TOO_MANY_ERRORS,
        ];
        assert!(terminal.iter().all(|d| !d.reconnect()));
        let again = [
            DISCONNECT_CONNECTION_CLOSED,
            DISCONNECT_SHUTDOWN,
            DISCONNECT_SERVER_ERROR,
            DISCONNECT_EXPIRED,
            DISCONNECT_SUBSCRIPTION_EXPIRED,
            DISCONNECT_SLOW,
            DISCONNECT_WRITE_ERROR,
            DISCONNECT_INSUFFICIENT_STATE,
            DISCONNECT_FORCE_RECONNECT,
            DISCONNECT_NO_PONG,
            DISCONNECT_TOO_MANY_REQUESTS,
            DISCONNECT_STATE_INVALIDATED,
        ];
        assert!(again.iter().all(Disconnect::reconnect));
        let custom = |code| Disconnect { code, reason: Cow::Borrowed("x") };
        assert!(custom(4000).reconnect());
        assert!(custom(4499).reconnect());
        assert!(!custom(4500).reconnect());
        assert!(!custom(4999).reconnect());
        assert!(custom(5000).reconnect());
        assert!(!custom(3999).reconnect());
        assert_eq!(DISCONNECT_SLOW.reason, "slow");
        assert_eq!(DISCONNECT_SHUTDOWN.code, 3001);
    }

    #[test]
    fn unsubscribe_codes_from_2500_resubscribe() {
        assert!(!UNSUBSCRIBE_SERVER.resubscribe());
        assert!(UNSUBSCRIBE_INSUFFICIENT_STATE.resubscribe());
        assert!(UNSUBSCRIBE_EXPIRED.resubscribe());
        assert!(UNSUBSCRIBE_STATE_INVALIDATED.resubscribe());
        assert_eq!(UNSUBSCRIBE_SERVER.reason, "server unsubscribe");
    }

    #[test]
    fn unidirectional_connect_errors_map_to_documented_disconnects() {
        assert_eq!(unidirectional_connect_disconnect(109), DISCONNECT_EXPIRED);
        assert_eq!(unidirectional_connect_disconnect(110), DISCONNECT_EXPIRED);
        assert_eq!(unidirectional_connect_disconnect(111), DISCONNECT_TOO_MANY_REQUESTS);
        assert_eq!(unidirectional_connect_disconnect(103), DISCONNECT_PERMISSION_DENIED);
        assert_eq!(unidirectional_connect_disconnect(102), DISCONNECT_SERVER_ERROR);
    }
}
