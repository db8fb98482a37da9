//! The `threadpool` backend (not yet implemented).

use std::io;

use super::Backend;
use crate::server::ServeContext;

pub struct ThreadPool;

impl Backend for ThreadPool {
    fn serve(&self, _ctx: ServeContext) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "the threadpool backend is not implemented yet"))
    }
}
