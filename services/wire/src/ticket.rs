//! Join tickets: control's short-lived, HMAC-SHA256-signed permission for one viewer to join
//! one stream on one relay. Relays check them with the key they share with control, so a
//! viewer cannot bypass control's placement, and the check needs no call to control.
//!
//! Layout: `expires_ms: u64`, `nonce: u64`, `stream_id: u16 len + bytes`, `relay_id: u16
//! len + bytes`, then 32 bytes of MAC over everything before it. The nonce (random, from
//! control) makes every ticket unique, so a relay can take each one once: a ticket seats one
//! viewer, never a second connection replaying it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::limits::{MAX_ID, MAX_TICKET};

type HmacSha256 = Hmac<Sha256>;
const MAC_LEN: usize = 32;

/// Why a ticket was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    /// Not a ticket at all, or cut short.
    #[error("malformed join ticket")]
    Malformed,
    /// The MAC does not match: forged, or signed with another key.
    #[error("join ticket signature does not match")]
    BadSignature,
    /// Valid once, but too old.
    #[error("join ticket expired {0} ms ago")]
    Expired(u64),
    /// Issued for another stream.
    #[error("join ticket is for stream {0:?}")]
    WrongStream(String),
    /// Issued for another relay.
    #[error("join ticket is for relay {0:?}")]
    WrongRelay(String),
}

/// What a valid ticket says beyond the ids it was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verified {
    /// Valid until then (Unix ms): how long a relay must remember it was used.
    pub expires_ms: u64,
    /// The ticket's nonce: with `expires_ms`, what tells it from every other ticket.
    pub nonce: u64,
}

/// Signs a ticket for `stream_id` on `relay_id`, valid until `expires_ms` (Unix ms), made
/// unique by `nonce` (random).
pub fn issue(key: &[u8], stream_id: &str, relay_id: &str, expires_ms: u64, nonce: u64) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u64(expires_ms);
    b.put_u64(nonce);
    for field in [stream_id, relay_id] {
        let f = &field.as_bytes()[..field.len().min(MAX_ID)];
        b.put_u16(f.len() as u16);
        b.extend_from_slice(f);
    }
    let mac = sign(key, &b);
    b.extend_from_slice(&mac);
    b.freeze()
}

/// Checks a ticket for `stream_id` on `relay_id` at time `now_ms`.
pub fn verify(
    key: &[u8],
    ticket: &[u8],
    stream_id: &str,
    relay_id: &str,
    now_ms: u64,
) -> Result<Verified, TicketError> {
    if ticket.len() > MAX_TICKET || ticket.len() < 8 + 8 + 2 + 2 + MAC_LEN {
        return Err(TicketError::Malformed);
    }
    let (signed, mac) = ticket.split_at(ticket.len() - MAC_LEN);
    let mut check = HmacSha256::new_from_slice(key).map_err(|_| TicketError::BadSignature)?;
    check.update(signed);
    check
        .verify_slice(mac)
        .map_err(|_| TicketError::BadSignature)?;

    let mut body = signed;
    let expires_ms = body.get_u64();
    let nonce = body.get_u64();
    let ticket_stream = take_str(&mut body)?;
    let ticket_relay = take_str(&mut body)?;
    if body.has_remaining() {
        return Err(TicketError::Malformed);
    }
    if now_ms > expires_ms {
        return Err(TicketError::Expired(now_ms - expires_ms));
    }
    if ticket_stream != stream_id {
        return Err(TicketError::WrongStream(ticket_stream));
    }
    if ticket_relay != relay_id {
        return Err(TicketError::WrongRelay(ticket_relay));
    }
    Ok(Verified { expires_ms, nonce })
}

fn sign(key: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; MAC_LEN],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn take_str(body: &mut &[u8]) -> Result<String, TicketError> {
    if body.remaining() < 2 {
        return Err(TicketError::Malformed);
    }
    let len = body.get_u16() as usize;
    if body.remaining() < len {
        return Err(TicketError::Malformed);
    }
    let s = String::from_utf8(body[..len].to_vec()).map_err(|_| TicketError::Malformed)?;
    body.advance(len);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn valid_ticket_passes() {
        let t = issue(KEY, "s1", "relay-1", 10_000, 7);
        assert_eq!(
            verify(KEY, &t, "s1", "relay-1", 9_999),
            Ok(Verified {
                expires_ms: 10_000,
                nonce: 7
            })
        );
        // The nonce tells tickets apart that are otherwise the same.
        assert_ne!(t, issue(KEY, "s1", "relay-1", 10_000, 8));
    }

    #[test]
    fn every_wrong_ticket_is_refused() {
        let t = issue(KEY, "s1", "relay-1", 10_000, 1);
        assert_eq!(
            verify(KEY, &t, "s1", "relay-1", 10_500),
            Err(TicketError::Expired(500))
        );
        assert_eq!(
            verify(KEY, &t, "s2", "relay-1", 0),
            Err(TicketError::WrongStream("s1".into()))
        );
        assert_eq!(
            verify(KEY, &t, "s1", "relay-2", 0),
            Err(TicketError::WrongRelay("relay-1".into()))
        );
        assert_eq!(
            verify(b"another key", &t, "s1", "relay-1", 0),
            Err(TicketError::BadSignature)
        );
        let mut forged = t.to_vec();
        forged[3] ^= 1;
        assert_eq!(
            verify(KEY, &forged, "s1", "relay-1", 0),
            Err(TicketError::BadSignature)
        );
        assert_eq!(
            verify(KEY, b"short", "s1", "relay-1", 0),
            Err(TicketError::Malformed)
        );
    }
}
