//! Shared by the fuzz targets: an in-memory stream that plays a proxy's side of a handshake.
#![allow(dead_code)] // each target uses part of it

use std::io::{self, Read, Write};

/// Reads come from `input`, at most `chunk` bytes per `read` (a proxy whose reply arrives in
/// pieces); writes are recorded so that targets can check what the client sent.
pub struct Script<'a> {
    input: &'a [u8],
    pub pos: usize,
    chunk: usize,
    pub written: Vec<u8>,
}

impl<'a> Script<'a> {
    /// `chunk` 0 means "whatever the caller asks for".
    pub fn new(input: &'a [u8], chunk: usize) -> Self {
        Script { input, pos: 0, chunk: if chunk == 0 { usize::MAX } else { chunk }, written: Vec::new() }
    }

    pub fn unread(&self) -> &'a [u8] {
        &self.input[self.pos..]
    }
}

impl Read for Script<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.input.len() - self.pos).min(self.chunk);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl socksify_core::wire::Peek for Script<'_> {
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.input.len() - self.pos).min(self.chunk);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        Ok(n)
    }
}

impl Write for Script<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
