//! GSSAPI authentication for SOCKS5 (method 0x01, RFC 1961): the message framing, the
//! context-establishment loop (§3) and the per-message protection subnegotiation (§4), over any
//! [`Mechanism`]. The real mechanism is MIT Kerberos' ([`crate::krb5`]); the tests here use a
//! scripted one, so the protocol is tested without a realm.
//!
//! socksify asks for no per-message protection beyond authentication (level 0, Dante's
//! `gssapi.enctype: clear`): the data then flows on the program's own socket, untouched. A proxy
//! that insists on integrity or confidentiality makes the connection fail with the level named,
//! never carry data unprotected.

use std::io::{Read, Write};

use crate::error::SocksError;
use crate::wire::{read_exact, transport};

pub const METHOD_GSSAPI: u8 = 0x01;
/// The subnegotiation's version (RFC 1961 §3.3).
pub const VERSION: u8 = 1;
pub const MTYP_AUTH: u8 = 1;
pub const MTYP_PROTECTION: u8 = 2;
/// "Authentication failed": the server aborts the context (§3.5).
pub const MTYP_ABORT: u8 = 0xff;

/// A per-message protection level of RFC 1961 §4.3, with 0 for none (Dante's `clear`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    None,
    Integrity,
    Confidentiality,
    PerMessage,
    Other(u8),
}

impl Protection {
    pub fn from_byte(b: u8) -> Protection {
        match b {
            0 => Protection::None,
            1 => Protection::Integrity,
            2 => Protection::Confidentiality,
            3 => Protection::PerMessage,
            other => Protection::Other(other),
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            Protection::None => 0,
            Protection::Integrity => 1,
            Protection::Confidentiality => 2,
            Protection::PerMessage => 3,
            Protection::Other(b) => b,
        }
    }

    /// As a user reads it, and as Dante's `gssapi.enctype` spells the first three.
    pub fn name(self) -> String {
        match self {
            Protection::None => "none beyond authentication (clear)".into(),
            Protection::Integrity => "integrity".into(),
            Protection::Confidentiality => "confidentiality".into(),
            Protection::PerMessage => "selective per-message protection".into(),
            Protection::Other(b) => format!("unknown level {b}"),
        }
    }
}

/// One step of context establishment: the token to send, and whether the context is complete.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// `GSS_S_CONTINUE_NEEDED`: send this token and feed the server's answer to the next step.
    Continue(Vec<u8>),
    /// `GSS_S_COMPLETE`: send this token if it is not empty; the context is established.
    Done(Vec<u8>),
}

/// A GSS-API security context being established by the client (the initiator).
pub trait Mechanism {
    /// `gss_init_sec_context`: `input` is the server's last token (`None` the first time).
    fn step(&mut self, input: Option<&[u8]>) -> Result<Step, SocksError>;
    /// `gss_wrap` with `conf_req_flag` false: integrity only, as §4.3 wants for the level.
    fn wrap(&mut self, data: &[u8]) -> Result<Vec<u8>, SocksError>;
    /// `gss_unwrap`.
    fn unwrap(&mut self, token: &[u8]) -> Result<Vec<u8>, SocksError>;
}

/// What the exchange ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// The level the proxy chose (always [`Protection::None`] when authentication succeeded).
    pub protection: Protection,
}

/// `VER MTYP LEN TOKEN` (§3.3).
pub fn encode(mtyp: u8, token: &[u8]) -> Result<Vec<u8>, SocksError> {
    let len = u16::try_from(token.len()).map_err(|_| {
        SocksError::Gssapi(format!("a GSSAPI token of {} bytes does not fit in 65535", token.len()))
    })?;
    let mut out = Vec::with_capacity(4 + token.len());
    out.extend_from_slice(&[VERSION, mtyp]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(token);
    Ok(out)
}

/// Checks a message's `VER MTYP` against the type expected. The abort message (§3.5) is just
/// these two bytes, `01 ff`: it must be recognised before a length is read.
fn check_type(head: [u8; 2], expected: u8) -> Result<(), SocksError> {
    if head[1] == MTYP_ABORT {
        return Err(SocksError::GssapiAborted);
    }
    if head[0] != VERSION {
        return Err(SocksError::BadVersion { expected: VERSION, got: head[0] });
    }
    if head[1] != expected {
        return Err(SocksError::BadReply("a GSSAPI message of an unexpected type"));
    }
    Ok(())
}

fn token_len(len: [u8; 2]) -> Result<usize, SocksError> {
    match u16::from_be_bytes(len) as usize {
        0 => Err(SocksError::BadReply("an empty GSSAPI token")),
        len => Ok(len),
    }
}

/// A whole message from bytes: its token and what follows it (for the fuzzer and the tests).
pub fn decode(bytes: &[u8], expected: u8) -> Result<(&[u8], &[u8]), SocksError> {
    let head: [u8; 2] = bytes.get(..2).ok_or(SocksError::Closed)?.try_into().expect("2 bytes");
    check_type(head, expected)?;
    let len: [u8; 2] = bytes.get(2..4).ok_or(SocksError::Closed)?.try_into().expect("2 bytes");
    let len = token_len(len)?;
    let token = bytes.get(4..4 + len).ok_or(SocksError::Closed)?;
    Ok((token, &bytes[4 + len..]))
}

fn read_message<S: Read>(stream: &mut S, expected: u8) -> Result<Vec<u8>, SocksError> {
    let mut head = [0u8; 2];
    read_exact(stream, &mut head)?;
    check_type(head, expected)?;
    let mut len = [0u8; 2];
    read_exact(stream, &mut len)?;
    let mut token = vec![0u8; token_len(len)?];
    read_exact(stream, &mut token)?;
    Ok(token)
}

/// Head and token in one write (a Kerberos AP-REQ is larger than the codecs' stack buffer).
fn send<S: Write>(stream: &mut S, mtyp: u8, token: &[u8]) -> Result<(), SocksError> {
    stream.write_all(&encode(mtyp, token)?).map_err(transport)
}

/// Runs the GSSAPI subnegotiation on a stream whose proxy chose method 0x01: the context, then
/// the protection level. Fails unless the proxy agrees to no per-message protection.
pub fn authenticate<S: Read + Write>(
    stream: &mut S,
    mech: &mut dyn Mechanism,
) -> Result<Authenticated, SocksError> {
    let mut input: Option<Vec<u8>> = None;
    loop {
        match mech.step(input.as_deref())? {
            Step::Continue(token) => {
                if token.is_empty() {
                    return Err(SocksError::Gssapi("the GSSAPI mechanism produced no token to send".into()));
                }
                send(stream, MTYP_AUTH, &token)?;
                // A proxy that hangs up on our token refused it (Dante does, for an unknown
                // principal): a rejection, not a dead proxy.
                input = Some(read_message(stream, MTYP_AUTH).map_err(|e| match e {
                    SocksError::Closed => SocksError::GssapiAborted,
                    e => e,
                })?);
            }
            Step::Done(token) => {
                if !token.is_empty() {
                    send(stream, MTYP_AUTH, &token)?;
                }
                break;
            }
        }
    }
    // §4.3: the level is one octet, wrapped for integrity (not confidentiality).
    let wrapped = mech.wrap(&[Protection::None.byte()])?;
    send(stream, MTYP_PROTECTION, &wrapped)?;
    let answer = match read_message(stream, MTYP_PROTECTION) {
        Err(SocksError::GssapiAborted | SocksError::Closed) => {
            return Err(SocksError::GssapiProtection(None));
        }
        other => other?,
    };
    let level = mech.unwrap(&answer)?;
    let [level] = level[..] else {
        return Err(SocksError::BadReply("a GSSAPI protection level that is not one octet"));
    };
    match Protection::from_byte(level) {
        Protection::None => Ok(Authenticated { protection: Protection::None }),
        other => Err(SocksError::GssapiProtection(Some(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::Scripted;

    /// A mechanism that "wraps" by prefixing `W` and needs `rounds` server tokens.
    struct Fake {
        rounds: usize,
        seen: Vec<Vec<u8>>,
    }

    impl Mechanism for Fake {
        fn step(&mut self, input: Option<&[u8]>) -> Result<Step, SocksError> {
            if let Some(i) = input {
                self.seen.push(i.to_vec());
            }
            if self.seen.len() < self.rounds {
                Ok(Step::Continue(vec![b'c', self.seen.len() as u8]))
            } else {
                Ok(Step::Done(Vec::new()))
            }
        }
        fn wrap(&mut self, data: &[u8]) -> Result<Vec<u8>, SocksError> {
            Ok([b"W".as_slice(), data].concat())
        }
        fn unwrap(&mut self, token: &[u8]) -> Result<Vec<u8>, SocksError> {
            token.strip_prefix(b"W").map(<[u8]>::to_vec).ok_or(SocksError::Gssapi("bad wrap".into()))
        }
    }

    fn level(b: u8) -> Vec<u8> {
        encode(MTYP_PROTECTION, &[b'W', b]).unwrap()
    }

    #[test]
    fn context_then_level_none() {
        let mut input = encode(MTYP_AUTH, b"s0").unwrap();
        input.extend(level(0));
        let mut s = Scripted::new(&input);
        let mut mech = Fake { rounds: 1, seen: Vec::new() };
        assert_eq!(authenticate(&mut s, &mut mech).unwrap().protection, Protection::None);
        assert_eq!(mech.seen, vec![b"s0".to_vec()]);
        let mut want = encode(MTYP_AUTH, &[b'c', 0]).unwrap();
        want.extend(encode(MTYP_PROTECTION, b"W\0").unwrap());
        assert_eq!(s.written, want);
    }

    #[test]
    fn a_level_the_client_cannot_speak_is_named() {
        for (b, name) in [(1, "integrity"), (2, "confidentiality")] {
            let mut input = encode(MTYP_AUTH, b"s0").unwrap();
            input.extend(level(b));
            let e = authenticate(&mut Scripted::new(&input), &mut Fake { rounds: 1, seen: Vec::new() })
                .unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
            assert_eq!(e.errno(), libc::EACCES);
        }
        // A server that refuses level 0 by aborting or hanging up.
        for tail in [vec![1, MTYP_ABORT], vec![]] {
            let mut input = encode(MTYP_AUTH, b"s0").unwrap();
            input.extend(tail);
            let e = authenticate(&mut Scripted::new(&input), &mut Fake { rounds: 1, seen: Vec::new() })
                .unwrap_err();
            assert!(e.to_string().contains("protection"), "{e}");
        }
    }

    #[test]
    fn an_abort_during_the_context_is_a_rejection() {
        // Two bytes, as §3.5 has it: recognised without waiting for a length.
        let e = authenticate(&mut Scripted::new(&[1, 0xff]), &mut Fake { rounds: 1, seen: Vec::new() })
            .unwrap_err();
        assert!(matches!(e, SocksError::GssapiAborted), "{e}");
        assert_eq!(e.errno(), libc::EACCES);
    }

    #[test]
    fn malformed_messages_are_errors() {
        for (bytes, what) in [
            (&[2u8, 1, 0, 1, 0][..], "version"),
            (&[1, 2, 0, 1, 0][..], "unexpected type"),
            (&[1, 1, 0, 0][..], "empty"),
            (&[1, 1, 0, 5, 1][..], "closed"),
        ] {
            let e = decode(bytes, MTYP_AUTH).unwrap_err();
            assert!(e.to_string().contains(what), "{what}: {e}");
        }
        assert_eq!(decode(&[1, 1, 0, 2, 7, 8, 9], MTYP_AUTH).unwrap(), (&[7u8, 8][..], &[9u8][..]));
        assert!(encode(MTYP_AUTH, &vec![0; 65536]).is_err());
        // A level that is not one octet once unwrapped.
        let mut input = encode(MTYP_AUTH, b"s0").unwrap();
        input.extend(encode(MTYP_PROTECTION, b"W\0\0").unwrap());
        let e =
            authenticate(&mut Scripted::new(&input), &mut Fake { rounds: 1, seen: Vec::new() }).unwrap_err();
        assert!(e.to_string().contains("one octet"), "{e}");
    }

    #[test]
    fn several_rounds_and_a_final_token() {
        struct Final(u8);
        impl Mechanism for Final {
            fn step(&mut self, input: Option<&[u8]>) -> Result<Step, SocksError> {
                self.0 += 1;
                Ok(match input {
                    None => Step::Continue(b"a".to_vec()),
                    Some(_) if self.0 < 3 => Step::Continue(b"b".to_vec()),
                    Some(_) => Step::Done(b"z".to_vec()),
                })
            }
            fn wrap(&mut self, d: &[u8]) -> Result<Vec<u8>, SocksError> {
                Ok([b"W".as_slice(), d].concat())
            }
            fn unwrap(&mut self, t: &[u8]) -> Result<Vec<u8>, SocksError> {
                Ok(t[1..].to_vec())
            }
        }
        let mut input = encode(MTYP_AUTH, b"1").unwrap();
        input.extend(encode(MTYP_AUTH, b"2").unwrap());
        input.extend(level(0));
        let mut s = Scripted::new(&input);
        authenticate(&mut s, &mut Final(0)).unwrap();
        let mut want = encode(MTYP_AUTH, b"a").unwrap();
        want.extend(encode(MTYP_AUTH, b"b").unwrap());
        want.extend(encode(MTYP_AUTH, b"z").unwrap());
        want.extend(encode(MTYP_PROTECTION, b"W\0").unwrap());
        assert_eq!(s.written, want);
        assert_eq!(s.unread(), 0);
    }
}
