//! Byte-level helpers shared by the SOCKS4 and SOCKS5 codecs: a fixed-size message buffer that
//! never allocates, and reads that turn transport failures into `SocksError`s.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::SocksError;

/// The largest message the client writes: a SOCKS5 handshake in one write — a greeting (3
/// bytes), an RFC 1929 request (1 + 1 + 255 + 1 + 255) and a request naming a 255-byte host
/// (4 + 1 + 255 + 2) — or a SOCKS4a request with a 255-byte user id and a 255-byte name.
pub(crate) const MAX_MESSAGE: usize = 3 + 513 + 262;

/// A message under construction, on the stack: hooks run on the program's stack and should not
/// allocate on every connect.
pub(crate) struct Msg {
    buf: [u8; MAX_MESSAGE],
    len: usize,
}

impl Msg {
    pub(crate) fn new() -> Self {
        Msg { buf: [0; MAX_MESSAGE], len: 0 }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        self
    }

    pub(crate) fn byte(&mut self, b: u8) -> &mut Self {
        self.push(&[b])
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub(crate) fn send<S: Write>(&self, stream: &mut S) -> Result<(), SocksError> {
        stream.write_all(self.as_bytes()).map_err(transport)?;
        Ok(())
    }
}

/// Looking at what has arrived without consuming it (HTTP response heads have no length).
pub trait Peek {
    /// Waits for data and copies what has arrived into `buf` without consuming it; 0 at EOF.
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Waits (until the stream's deadline) for something to read, without reading it.
    fn readable(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Waits at most `wait` (and well before the stream's own deadline) for something to read:
    /// false when the wait ran out first. A stream that cannot tell says true.
    fn ready_within(&mut self, wait: std::time::Duration) -> io::Result<bool> {
        let _ = wait;
        Ok(true)
    }
}

/// Reads exactly `buf.len()` bytes: one `read` when the proxy's reply has arrived whole.
pub fn read_exact<S: Read>(stream: &mut S, buf: &mut [u8]) -> Result<(), SocksError> {
    stream.read_exact(buf).map_err(transport)
}

pub(crate) fn transport(e: io::Error) -> SocksError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => SocksError::Closed,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => SocksError::Timeout,
        _ => SocksError::Io(e),
    }
}

pub(crate) fn ipv4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

pub(crate) fn ipv6(b: &[u8]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&b[..16]);
    Ipv6Addr::from(octets)
}

pub(crate) fn port(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[cfg(test)]
pub(crate) mod testing {
    //! An in-memory stream for codec tests: reads come from a script, writes are recorded, and
    //! the number of `read` calls is counted.
    use std::io::{self, Read, Write};

    pub struct Scripted {
        pub input: Vec<u8>,
        pub pos: usize,
        pub written: Vec<u8>,
        pub reads: usize,
    }

    impl Scripted {
        pub fn new(input: &[u8]) -> Self {
            Scripted { input: input.to_vec(), pos: 0, written: Vec::new(), reads: 0 }
        }

        pub fn unread(&self) -> usize {
            self.input.len() - self.pos
        }
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            let n = buf.len().min(self.input.len() - self.pos);
            buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl super::Peek for Scripted {
        fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.input.len() - self.pos);
            buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
            Ok(n)
        }

        /// Something is to be read when the script has bytes left.
        fn ready_within(&mut self, _: std::time::Duration) -> io::Result<bool> {
            Ok(self.unread() > 0)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
