//! The SOCKS5 UDP request header (RFC 1928, section 7) of datagrams from the relay:
//! `v5::decode_udp` on raw bytes.
//!
//! Properties: no panic; for an accepted datagram, the payload offset is within it and equals
//! `udp_header_len` of the address; `encode_udp(addr, payload)` succeeds, reproduces the
//! datagram (but for the two RSV bytes, which the decoder ignores), and decodes back to the same
//! address and payload.
//!
//! Found: a name with NUL decoded and then could not be encoded (input `00 00 00 03 01 00 00 00`,
//! kept as corpus/udp_header/domain-nul-name); decode_udp now refuses it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksify_core::v5;

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
