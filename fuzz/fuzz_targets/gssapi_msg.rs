//! GSSAPI's framing (RFC 1961 §3.3: VER MTYP LEN TOKEN) and exchange from the client's side
//! against a hostile proxy: `gssapi::decode` on raw bytes, and `gssapi::authenticate` with a
//! scripted mechanism on a stream whose server bytes are the input.
//!
//! Input: one control byte, then the proxy's bytes.
//!   bit 0:    0 = decode alone, 1 = the whole exchange
//!   bits 1-2: server tokens the mechanism wants before it is complete (0-3)
//!   bits 3-5: bytes per `read` (0 = as many as asked)
//! Properties: no panic, no hang; a decoded message re-encodes to the bytes it came from; every
//! message the client writes is well formed; success means the proxy granted level 0 exactly.
#![no_main]

mod common;

use common::Script;
use libfuzzer_sys::fuzz_target;
use socksify_core::gssapi::{self, Mechanism, Step, MTYP_AUTH, MTYP_PROTECTION};
use socksify_core::SocksError;

/// Wraps by prefixing `W`; wants `rounds` server tokens.
struct Scripted {
    rounds: usize,
    seen: usize,
}

impl Mechanism for Scripted {
    fn step(&mut self, input: Option<&[u8]>) -> Result<Step, SocksError> {
        if input.is_some() {
            self.seen += 1;
        }
        Ok(if self.seen < self.rounds {
            Step::Continue(vec![0x60, self.seen as u8])
        } else {
            Step::Done(Vec::new())
        })
    }
    fn wrap(&mut self, data: &[u8]) -> Result<Vec<u8>, SocksError> {
        Ok([b"W".as_slice(), data].concat())
    }
    fn unwrap(&mut self, token: &[u8]) -> Result<Vec<u8>, SocksError> {
        token.strip_prefix(b"W").map(<[u8]>::to_vec).ok_or(SocksError::Gssapi("not wrapped".into()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    if control & 1 == 0 {
        for mtyp in [MTYP_AUTH, MTYP_PROTECTION] {
            if let Ok((token, after)) = gssapi::decode(rest, mtyp) {
                let again = gssapi::encode(mtyp, token).expect("a decoded token fits");
                assert_eq!(&rest[..again.len()], &again[..]);
                assert_eq!(after.len(), rest.len() - again.len());
            }
        }
        return;
    }
    let rounds = usize::from((control >> 1) & 3);
    let mut s = Script::new(rest, usize::from((control >> 3) & 7));
    let mut mech = Scripted { rounds, seen: 0 };
    let result = gssapi::authenticate(&mut s, &mut mech);
    // What the client wrote: auth messages, then at most one protection message.
    let mut w = &s.written[..];
    let mut kinds = Vec::new();
    while !w.is_empty() {
        let (mtyp, (_, after)) = match gssapi::decode(w, MTYP_AUTH) {
            Ok(m) => (MTYP_AUTH, m),
            Err(_) => (MTYP_PROTECTION, gssapi::decode(w, MTYP_PROTECTION).expect("a well-formed message")),
        };
        kinds.push(mtyp);
        w = after;
    }
    assert!(kinds.iter().filter(|&&k| k == MTYP_PROTECTION).count() <= 1);
    match result {
        Ok(a) => {
            assert_eq!(a.protection, gssapi::Protection::None);
            assert_eq!(kinds.last(), Some(&MTYP_PROTECTION));
        }
        Err(e) => {
            let _ = (e.to_string(), e.errno());
        }
    }
});
