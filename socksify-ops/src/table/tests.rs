use super::*;

fn udp() -> c_int {
    // SAFETY: a new socket for the test.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(fd >= 0);
    fd
}

fn close_fd(fd: c_int) {
    // SAFETY: closing the test's own descriptor.
    unsafe { libc::close(fd) };
}

fn dup_fd(fd: c_int) -> c_int {
    // SAFETY: dup of the test's own descriptor.
    let n = unsafe { libc::dup(fd) };
    assert!(n >= 0);
    n
}

fn peer(fd: c_int) -> Option<SocketAddr> {
    entry(fd, |e| e.peer()).flatten()
}

const PEER: &str = "192.0.2.7:80";

#[test]
fn an_entry_lives_as_long_as_a_descriptor_of_its_socket() {
    let a = udp();
    assert!(!known(a));
    entry_or_new(a, |e| e.tcp_peer = Some(PEER.parse().unwrap()));
    assert!(known(a));
    let b = dup_fd(a);
    duplicated(a, b);
    assert_eq!(peer(b), Some(PEER.parse().unwrap()), "the dup shares it");
    assert_eq!(closing(a), Closing::Program);
    close_fd(a);
    assert!(!known(a));
    assert_eq!(peer(b), Some(PEER.parse().unwrap()), "closing the original keeps it for the dup");
    closing(b);
    close_fd(b);
    assert!(!known(b));
}

#[test]
fn a_number_closed_behind_the_librarys_back_and_reused_is_a_new_socket() {
    let a = udp();
    entry_or_new(a, |e| e.tcp_peer = Some(PEER.parse().unwrap()));
    close_fd(a); // not through `closing`: fclose, a raw system call…
    let b = udp();
    if b == a {
        assert_eq!(peer(b), None, "the inode tells the new socket from the old");
    }
    closing(b);
    close_fd(b);
}

fn control() -> Owned {
    sock::socket_high(libc::AF_INET, libc::SOCK_STREAM).unwrap()
}

#[test]
fn an_association_is_shared_by_dups_kept_internal_and_closed_with_the_last_descriptor() {
    let a = udp();
    let c = control();
    let cfd = c.raw();
    let relay: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let link = insert_assoc(a, Assoc::new(c, relay, 0)).unwrap();
    assert_eq!((link.control, link.relay), (cfd, relay));
    assert!(relayed(a) && known(cfd) && is_internal(cfd));
    // A second association for the same socket loses to the first.
    let spare = control();
    let spare_fd = spare.raw();
    assert_eq!(insert_assoc(a, Assoc::new(spare, "192.0.2.2:1".parse().unwrap(), 0)).unwrap().control, cfd);
    assert_eq!(sock::inode(spare_fd), None, "the loser's control connection is closed");
    let b = dup_fd(a);
    duplicated(a, b);
    assert!(relayed(b));
    assert_eq!(closing(cfd), Closing::Internal, "the program cannot close the library's own");
    assert_eq!(closing_range(cfd, cfd), vec![cfd]);
    assert!(sock::inode(cfd).is_some());
    closing(a);
    close_fd(a);
    assert!(sock::inode(cfd).is_some(), "the dup keeps the association");
    assert_eq!(link_of(b), Some(relay));
    closing(b);
    close_fd(b);
    assert_eq!(sock::inode(cfd), None, "gone with the last descriptor");
    assert!(!known(cfd));
}

fn link_of(fd: c_int) -> Option<SocketAddr> {
    link(fd).map(|l| l.relay)
}

#[test]
fn a_range_closed_together_forgets_its_descriptors_but_not_the_librarys() {
    let a = udp();
    let c = control();
    let cfd = c.raw();
    insert_assoc(a, Assoc::new(c, "192.0.2.1:4000".parse().unwrap(), 0)).unwrap();
    let b = dup_fd(a);
    duplicated(a, b);
    // The library's descriptor in the range stays; the program's go.
    assert_eq!(closing_range(cfd, cfd), vec![cfd]);
    assert_eq!(closing_range(a, a), Vec::<c_int>::new());
    close_fd(a);
    assert!(!known(a) && relayed(b), "the dup outside the range keeps the association");
    assert!(sock::inode(cfd).is_some());
    assert_eq!(closing_range(b, b), Vec::<c_int>::new());
    close_fd(b);
    assert_eq!(sock::inode(cfd), None, "its socket's last descriptor went: the association too");
}

#[test]
fn the_librarys_descriptor_moves_when_the_program_wants_its_number() {
    let a = udp();
    let c = control();
    let cfd = c.raw();
    insert_assoc(a, Assoc::new(c, "192.0.2.1:4000".parse().unwrap(), 0)).unwrap();
    relocate_internal(cfd);
    let moved = link(a).unwrap().control;
    assert_ne!(moved, cfd);
    assert!(is_internal(moved) && !is_internal(cfd));
    assert_eq!(sock::inode(cfd), None);
    drop_assoc(a);
    assert!(!relayed(a));
    assert_eq!(sock::inode(moved), None);
    closing(a);
    close_fd(a);
}

#[test]
fn a_forked_child_has_its_own_table() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registering the table's fork handlers, as the library does at load.
        unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
    });
    let a = udp();
    entry_or_new(a, |e| e.tcp_peer = Some(PEER.parse().unwrap()));
    // SAFETY: the child only reads the table, closes and exits.
    match unsafe { libc::fork() } {
        0 => {
            let ok = peer(a) == Some(PEER.parse().unwrap());
            closing(a);
            let gone = peer(a).is_none();
            // SAFETY: leaving the child at once.
            unsafe { libc::_exit(if ok && gone { 0 } else { 1 }) }
        }
        child => {
            assert!(child > 0);
            let mut status = 0;
            // SAFETY: waiting for our child.
            unsafe { libc::waitpid(child, &mut status, 0) };
            assert_eq!(libc::WEXITSTATUS(status), 0, "the child saw the entry, then forgot it");
            assert_eq!(peer(a), Some(PEER.parse().unwrap()), "the parent's stays");
            closing(a);
            close_fd(a);
        }
    }
}

#[test]
fn records_of_descriptors_closed_behind_the_librarys_back_are_swept() {
    // A UDP socket closed by fclose(): its association's control connection goes with the next
    // record the table makes.
    let a = udp();
    let c = control();
    let cfd = c.raw();
    insert_assoc(a, Assoc::new(c, "192.0.2.1:4000".parse().unwrap(), 0)).unwrap();
    close_fd(a);
    let hold = udp(); // so that the next socket is not given `a`'s number
    let b = udp();
    entry_or_new(b, |e| e.tcp_peer = Some(PEER.parse().unwrap()));
    assert_eq!(sock::inode(cfd), None, "the stale association's control connection is closed");
    // Many plain records closed that way do not pile up.
    let before = with(|t| t.by_fd.len());
    let mut spacers = Vec::new();
    for _ in 0..300 {
        let s = udp();
        entry_or_new(s, |e| e.tcp_peer = Some(PEER.parse().unwrap()));
        close_fd(s);
        spacers.push(dup_fd(hold)); // a number the next socket cannot reuse at once
    }
    let after = with(|t| t.by_fd.len());
    assert!(after < before + 150, "{before} -> {after}");
    spacers.into_iter().chain([hold]).for_each(close_fd);
    closing(b);
    close_fd(b);
}
