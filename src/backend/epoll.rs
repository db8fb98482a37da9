//! The `epoll` backend (not yet implemented).

use std::io;

use super::Backend;
use crate::server::ServeContext;

pub struct Epoll;

impl Backend for Epoll {
    fn serve(&self, _ctx: ServeContext) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "the epoll backend is not implemented yet"))
    }
}
