//! The `fork` backend (not yet implemented).

use std::io;

use super::Backend;
use crate::server::ServeContext;

pub struct Fork;

impl Backend for Fork {
    fn serve(&self, _ctx: ServeContext) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "the fork backend is not implemented yet"))
    }
}
