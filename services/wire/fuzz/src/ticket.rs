//! Join tickets: `ticket::verify` with a fixed key must never panic, whatever the bytes.
//!
//! Random bytes almost never carry a valid MAC, so on its own that would only exercise the
//! length and MAC checks. The target therefore also signs the fuzzed bytes with the key (as
//! control would) and verifies the result, which drives the body parser; its answer must
//! match a small reference parser written from the layout in `ticket.rs`. Finally, a ticket
//! `issue`d for ids taken from the input (within `MAX_ID`) must verify.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wire::limits::{MAX_ID, MAX_TICKET};
use wire::ticket::{TicketError, issue, verify};

const KEY: &[u8] = b"fuzz-key-0123456789abcdef-fuzz-key";
const MAC_LEN: usize = 32;
const STREAM: &str = "stream-1";
const RELAY: &str = "relay-1";
const NOW_MS: u64 = 1_700_000_000_000;

fn sign(body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).expect("HMAC takes any key length");
    mac.update(body);
    let mut out = body.to_vec();
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

/// `expires_ms`, stream id and relay id, if `body` is exactly that (after the nonce).
fn reference_parse(body: &[u8]) -> Option<(u64, String, String)> {
    let expires = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    body.get(8..16)?;
    let mut rest = &body[16..];
    let mut field = || -> Option<String> {
        let len = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
        let text = String::from_utf8(rest.get(2..2 + len)?.to_vec()).ok()?;
        rest = &rest[2 + len..];
        Some(text)
    };
    let stream = field()?;
    let relay = field()?;
    rest.is_empty().then_some((expires, stream, relay))
}

fn expected(body: &[u8], stream: &str, relay: &str) -> Result<(), TicketError> {
    let len = body.len() + MAC_LEN;
    if !(8 + 8 + 2 + 2 + MAC_LEN..=MAX_TICKET).contains(&len) {
        return Err(TicketError::Malformed);
    }
    let (expires, ticket_stream, ticket_relay) =
        reference_parse(body).ok_or(TicketError::Malformed)?;
    if NOW_MS > expires {
        return Err(TicketError::Expired(NOW_MS - expires));
    }
    if ticket_stream != stream {
        return Err(TicketError::WrongStream(ticket_stream));
    }
    if ticket_relay != relay {
        return Err(TicketError::WrongRelay(ticket_relay));
    }
    Ok(())
}

/// A prefix of `s` of at most `max` bytes, cut at a char boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The target's body: panics on any input that breaks a property above.
pub fn check(data: &[u8]) {
    // 1. Arbitrary bytes as a ticket: any answer but a panic.
    let _ = verify(KEY, data, STREAM, RELAY, NOW_MS);

    // 2. The same bytes as a signed ticket body: the parser behind the MAC check.
    let signed = sign(data);
    assert_eq!(
        verify(KEY, &signed, STREAM, RELAY, NOW_MS).map(|_| ()),
        expected(data, STREAM, RELAY),
        "signed body {data:02x?}"
    );
    // Asking for the ids the ticket actually names must then succeed unless expired.
    if let Some((expires, stream, relay)) = reference_parse(data) {
        let got = verify(KEY, &signed, &stream, &relay, NOW_MS).map(|v| v.expires_ms);
        if signed.len() <= MAX_TICKET && NOW_MS <= expires {
            assert_eq!(got, Ok(expires), "a well-formed signed ticket for its own ids");
        }
        // Another key never verifies it.
        assert_eq!(
            verify(b"another key", &signed, &stream, &relay, 0).err(),
            Some(if signed.len() <= MAX_TICKET {
                TicketError::BadSignature
            } else {
                TicketError::Malformed
            })
        );
    }

    // 3. issue() then verify() for ids from the input, within MAX_ID.
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_at(cut(&text, text.len() / 2).len());
    let (a, b) = (cut(a, MAX_ID), cut(b, MAX_ID));
    let expires = data.iter().fold(NOW_MS, |acc, &x| {
        acc.wrapping_mul(31).wrapping_add(u64::from(x))
    });
    let nonce = expires.rotate_left(17);
    let ticket = issue(KEY, a, b, expires, nonce);
    let got = verify(KEY, &ticket, a, b, NOW_MS);
    if NOW_MS <= expires {
        assert_eq!(
            got,
            Ok(wire::ticket::Verified {
                expires_ms: expires,
                nonce
            }),
            "issued ticket for {a:?} on {b:?} does not verify"
        );
    } else {
        assert_eq!(got, Err(TicketError::Expired(NOW_MS - expires)));
    }
}
