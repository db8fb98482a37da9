//! Batched datagram I/O: recvmmsg(2) and sendmmsg(2).
