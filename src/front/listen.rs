//! The client-facing listening sockets: one per serving thread, all on the same address.
//!
//! Threads that shared one socket were all woken for every new connection, and the first to run
//! drained the whole queue: 16 connections opened at once went to one thread in two of three
//! runs, and the gateway served on one CPU while it had two (docs/perf/RESULTS.md, 2026-12-04-b). Sockets of
//! their own in a `SO_REUSEPORT` group let the kernel hand each connection to exactly one
//! thread; when a thread's socket closes, the others take its share.
//!
//! Must never: let a second gateway (or any program) listen on an address this one holds.
//! `SO_REUSEPORT` would admit any later socket of the same user that sets it too, and the two
//! would split the connections silently; so the address is first bound without it, which fails
//! with "address in use" while anything listens there, as a plain bind would.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot set IP_TRANSPARENT on {addr} (TPROXY needs CAP_NET_ADMIN): {source}")]
    Transparent { addr: SocketAddr, source: io::Error },
}

/// How the sockets of a group are opened.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// `IP_TRANSPARENT`: accept connections addressed to any IP that a `TPROXY` rule steers here.
    pub ip_transparent: bool,
    pub backlog: i32,
}

/// The listening sockets on one address.
#[derive(Debug)]
pub struct ListenGroup {
    /// Where they listen: the configured address, with the port the kernel picked for port 0.
    pub addr: SocketAddr,
    /// Non-blocking, ready for `tokio::net::TcpListener::from_std` on whichever runtime serves
    /// each.
    pub sockets: Vec<std::net::TcpListener>,
}

/// Opens `count` (at least one) listening sockets on `addr`. With port 0 they all share the one
/// port the kernel picks for the first.
pub fn bind_group(
    addr: SocketAddr,
    count: usize,
    options: ListenOptions,
) -> Result<ListenGroup, ListenError> {
    if addr.port() != 0 {
        // Dropped before the group binds: it only proves that nothing listens here now.
        open(addr, options, false)?;
    }
    let first = open(addr, options, true)?;
    let bound = first
        .local_addr()
        .and_then(|bound| {
            bound
                .as_socket()
                .ok_or_else(|| io::Error::other("not an IP socket address"))
        })
        .map_err(|source| ListenError::Bind { addr, source })?;
    let mut sockets = Vec::with_capacity(count.max(1));
    sockets.push(first);
    while sockets.len() < count {
        sockets.push(open(bound, options, true)?);
    }
    for socket in &sockets {
        socket
            .listen(options.backlog)
            .map_err(|source| ListenError::Bind { addr, source })?;
    }
    Ok(ListenGroup {
        addr: bound,
        sockets: sockets
            .into_iter()
            .map(std::net::TcpListener::from)
            .collect(),
    })
}

/// A bound socket, not listening: the probe must never take a connection.
fn open(addr: SocketAddr, options: ListenOptions, reuse_port: bool) -> Result<Socket, ListenError> {
    let bind_error = |source| ListenError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(bind_error)?;
    // As std and tokio do on Unix: a restart must not wait out the last run's TIME_WAIT.
    socket.set_reuse_address(true).map_err(bind_error)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(bind_error)?;
    }
    if options.ip_transparent {
        let set = match addr {
            SocketAddr::V4(_) => socket.set_ip_transparent_v4(true),
            SocketAddr::V6(_) => socket.set_ip_transparent_v6(true),
        };
        set.map_err(|source| ListenError::Transparent { addr, source })?;
    }
    socket.set_nonblocking(true).map_err(bind_error)?;
    socket.bind(&addr.into()).map_err(bind_error)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: ListenOptions = ListenOptions {
        ip_transparent: false,
        backlog: 128,
    };

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn a_group_shares_one_port_and_each_socket_gets_connections() {
        let ListenGroup { addr, sockets } = bind_group(loopback(), 2, PLAIN).unwrap();
        assert_ne!(addr.port(), 0);
        for socket in &sockets {
            assert_eq!(socket.local_addr().unwrap(), addr);
        }

        // The kernel picks a socket by hashing the connection's addresses: 64 source ports
        // all landing on one of two sockets would mean the group is not a group.
        let clients: Vec<_> = (0..64)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut accepted = [0usize; 2];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while accepted.iter().sum::<usize>() < clients.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "accepted {accepted:?}"
            );
            for (socket, count) in sockets.iter().zip(accepted.iter_mut()) {
                while socket.accept().is_ok() {
                    *count += 1;
                }
            }
        }
        assert!(accepted.iter().all(|&count| count > 0), "{accepted:?}");
    }

    #[test]
    fn an_address_in_use_is_refused_even_to_another_group() {
        let held = bind_group(loopback(), 2, PLAIN).unwrap();
        let addr = held.addr;
        let error = bind_group(addr, 2, PLAIN).unwrap_err();
        let ListenError::Bind { source, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!(source.kind(), io::ErrorKind::AddrInUse, "{error}");
        assert!(error.to_string().contains(&addr.to_string()), "{error}");

        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = plain.local_addr().unwrap();
        assert!(bind_group(addr, 1, PLAIN).is_err());
    }

    #[test]
    fn a_freed_address_can_be_taken_again() {
        let addr = bind_group(loopback(), 2, PLAIN).unwrap().addr;
        let group = bind_group(addr, 2, PLAIN).unwrap();
        assert_eq!(group.addr, addr);
        assert_eq!(group.sockets.len(), 2);
    }
}
