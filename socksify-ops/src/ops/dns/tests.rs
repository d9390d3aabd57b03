use super::*;

#[test]
fn numeric_hosts_are_libcs() {
    for n in ["127.0.0.1", "127.1", "::1", "0x7f.1"] {
        assert!(is_numeric(n), "{n}");
    }
    assert!(!is_numeric("www.example.org"));
}

#[test]
fn answers_follow_the_family_asked() {
    let v4: IpAddr = "240.0.0.1".parse().unwrap();
    let v6: IpAddr = "100::1".parse().unwrap();
    let fake = || Resolution::Fake { v4, v6, unspec: v4 };
    assert_eq!(gai_addrs(fake(), libc::AF_INET6), Some(Ok(vec![v6])));
    assert_eq!(gai_addrs(fake(), libc::AF_UNSPEC), Some(Ok(vec![v4])));
    assert_eq!(gai_addrs(Resolution::System, libc::AF_INET), None);
    assert_eq!(gai_addrs(Resolution::Fail(FakeDnsError::BadName), 0), Some(Err(libc::EAI_NONAME)));
    let local = || Resolution::Local(vec![v4, v6]);
    assert_eq!(hostent_addrs(local(), libc::AF_INET6), Some(Ok(vec![v6])));
    assert_eq!(hostent_addrs(Resolution::Local(vec![v4]), libc::AF_INET6), Some(Err(HOST_NOT_FOUND)));
    assert_eq!(hostent_addrs(fake(), libc::AF_INET), Some(Ok(vec![v4])));
}

fn empty() -> hostent {
    hostent {
        h_name: std::ptr::null_mut(),
        h_aliases: std::ptr::null_mut(),
        h_addrtype: 0,
        h_length: 0,
        h_addr_list: std::ptr::null_mut(),
    }
}

#[test]
fn a_hostent_is_laid_out_in_the_callers_buffer_or_says_it_is_too_small() {
    let addrs: Vec<IpAddr> = vec!["240.0.0.1".parse().unwrap(), "240.0.0.2".parse().unwrap()];
    let mut ent = empty();
    let mut buf = [0u8; 256];
    fill_hostent("a.example", libc::AF_INET, &addrs, &mut ent, &mut buf).unwrap();
    // SAFETY: the hostent was just filled in `buf`.
    unsafe {
        assert_eq!(CStr::from_ptr(ent.h_name).to_str(), Ok("a.example"));
        assert!((*ent.h_aliases).is_null());
        assert_eq!((ent.h_addrtype, ent.h_length), (libc::AF_INET, 4));
        let first = std::slice::from_raw_parts(*ent.h_addr_list as *const u8, 4);
        assert_eq!(first, &[240, 0, 0, 1]);
        assert!((*ent.h_addr_list.add(2)).is_null());
    }
    let mut small = [0u8; 16];
    assert_eq!(fill_hostent("a.example", libc::AF_INET, &addrs, &mut ent, &mut small), Err(TooSmall));
    let mut ent6 = empty();
    fill_hostent("b", libc::AF_INET6, &addrs[..1], &mut ent6, &mut buf).unwrap();
    // SAFETY: as above.
    let mapped = unsafe { std::slice::from_raw_parts(*ent6.h_addr_list as *const u8, 16) };
    assert_eq!(&mapped[10..], &[0xff, 0xff, 240, 0, 0, 1], "IPv4 as v4-mapped in an AF_INET6 answer");
}

#[test]
fn address_lists_are_glibcs_own() {
    // SAFETY: addrinfo is plain old data.
    let mut h: addrinfo = unsafe { std::mem::zeroed() };
    h.ai_flags = libc::AI_NUMERICHOST;
    h.ai_socktype = libc::SOCK_STREAM;
    let addrs: Vec<IpAddr> = vec!["240.0.0.1".parse().unwrap(), "100::1".parse().unwrap()];
    let service = c"80";
    // SAFETY: a NUL-terminated service.
    let list = unsafe { numeric_list(&addrs, service.as_ptr(), &h) }.unwrap();
    let mut seen = Vec::new();
    let mut p = list;
    while !p.is_null() {
        // SAFETY: walking the list glibc built.
        unsafe {
            let bytes = std::slice::from_raw_parts((*p).ai_addr as *const u8, (*p).ai_addrlen as usize);
            seen.push(socksify_core::sockaddr::decode(bytes).unwrap());
            p = (*p).ai_next;
        }
    }
    // SAFETY: glibc's list, freed by glibc.
    unsafe { libc::freeaddrinfo(list) };
    assert_eq!(seen, vec!["240.0.0.1:80".parse().unwrap(), "[100::1]:80".parse().unwrap()]);
}
