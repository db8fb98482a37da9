//! The `uring` backend (not yet implemented).

use std::io;

use super::Backend;
use crate::server::ServeContext;

pub struct Uring;

impl Backend for Uring {
    fn serve(&self, _ctx: ServeContext) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "the uring backend is not implemented yet"))
    }
}
