//! The SOCKS5 UDP request header (RFC 1928, section 7) of datagrams from the relay:
//! `v5::decode_udp` on raw bytes.
//!
//! Properties: no panic; for an accepted datagram, the payload offset is within it and equals
//! `udp_header_len` of the address; `encode_udp(addr, payload)` succeeds, reproduces the
//! datagram (but for the two RSV bytes, which the decoder ignores), and decodes back to the same
//! address and payload.
//!
//! `SOCKSIFY_FUZZ_KNOWN=udp-nul-name` in the environment skips datagrams whose name contains
//! NUL (which decode_udp accepts and encode_udp refuses), to fuzz past that known finding.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use socksify_core::{v5, TargetAddr};

fn skip_nul_names() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| {
        std::env::var("SOCKSIFY_FUZZ_KNOWN").is_ok_and(|v| v.split(',').any(|k| k == "udp-nul-name"))
    })
}

fuzz_target!(|data: &[u8]| {
    let (addr, at) = match v5::decode_udp(data) {
        Ok(ok) => ok,
        Err(e) => {
            let _ = (e.to_string(), e.errno());
            return;
        }
    };
    assert!(at <= data.len(), "payload offset {at} past the end ({})", data.len());
    assert_eq!(at, v5::udp_header_len(&addr), "offset vs udp_header_len for {addr:?}");
    let _ = addr.to_string();
    let payload = &data[at..];
    if skip_nul_names() && matches!(&addr, TargetAddr::Domain(name, _) if name.contains('\0')) {
        return;
    }

    let wrapped = match v5::encode_udp(&addr, payload) {
        Ok(w) => w,
        Err(e) => panic!("decode_udp accepted {addr:?} from {data:?} but encode_udp refuses it: {e}"),
    };
    assert_eq!(wrapped.len(), data.len());
    assert_eq!(&wrapped[2..], &data[2..], "re-encoding changed the datagram");

    let (again, at2) = v5::decode_udp(&wrapped).expect("encode_udp output decodes");
    assert_eq!(again, addr);
    assert_eq!(&wrapped[at2..], payload);
});
