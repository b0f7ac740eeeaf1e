//! The four transports behind one connection type: a local datagram socket, UDP, TCP, and TCP
//! with TLS (rustls). Blocking I/O with timeouts: a connection lives on the sink's writer
//! thread, which nothing else waits on.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// Where and how to connect; built once, used for every reconnection.
pub(super) enum Target {
    Unix(PathBuf),
    Udp(String),
    Tcp(String),
    Tls {
        address: String,
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    },
}

pub(super) enum Conn {
    Unix(UnixDatagram),
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Target {
    /// Opens a connection; `timeout` bounds the TCP connect, the TLS handshake, and every
    /// later write (so a stalled receiver turns into an error, then a reconnection).
    pub(super) fn connect(&self, timeout: Duration) -> io::Result<Conn> {
        match self {
            Target::Unix(path) => {
                let s = UnixDatagram::unbound()?;
                s.connect(path)?;
                s.set_write_timeout(Some(timeout))?;
                Ok(Conn::Unix(s))
            }
            Target::Udp(address) => {
                // Resolved on every connection so a changed DNS answer is followed.
                let addr = resolve(address)?.next().ok_or_else(no_address)?;
                let local: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let s = UdpSocket::bind(local)?;
                // Connected, so ICMP port-unreachable comes back as ECONNREFUSED on a later
                // send and the sink can tell that nobody listens.
                s.connect(addr)?;
                s.set_write_timeout(Some(timeout))?;
                Ok(Conn::Udp(s))
            }
            Target::Tcp(address) => Ok(Conn::Tcp(tcp(address, timeout)?)),
            Target::Tls {
                address,
                config,
                server_name,
            } => {
                let mut sock = tcp(address, timeout)?;
                sock.set_read_timeout(Some(timeout))?;
                let mut tls = ClientConnection::new(config.clone(), server_name.clone())
                    .map_err(io::Error::other)?;
                // Finish the handshake now, so a bad certificate is a connection error and
                // not a failed write of the first messages.
                while tls.is_handshaking() {
                    tls.complete_io(&mut sock).map_err(|e| {
                        io::Error::new(e.kind(), format!("TLS handshake with {address}: {e}"))
                    })?;
                }
                Ok(Conn::Tls(Box::new(StreamOwned::new(tls, sock))))
            }
        }
    }

    /// The socket path or `host:port`, as configured.
    pub(super) fn address(&self) -> String {
        match self {
            Target::Unix(path) => path.display().to_string(),
            Target::Udp(a) | Target::Tcp(a) | Target::Tls { address: a, .. } => a.clone(),
        }
    }

    pub(super) fn is_datagram(&self) -> bool {
        matches!(self, Target::Unix(_) | Target::Udp(_))
    }
}

/// The addresses `address` resolves to; the error names it (the resolver's own message does
/// not).
fn resolve(address: &str) -> io::Result<std::vec::IntoIter<SocketAddr>> {
    address
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {address}: {e}")))
}

fn no_address() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address")
}

/// Tries each address the name resolves to, as a client should.
fn tcp(address: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = no_address();
    for addr in resolve(address)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                s.set_write_timeout(Some(timeout))?;
                return Ok(s);
            }
            Err(e) => last = io::Error::new(e.kind(), format!("{addr}: {e}")),
        }
    }
    Err(last)
}

impl Conn {
    /// Sends one message as one datagram (Unix and UDP only).
    pub(super) fn send_datagram(&mut self, msg: &[u8]) -> io::Result<()> {
        let n = match self {
            Conn::Unix(s) => s.send(msg)?,
            Conn::Udp(s) => s.send(msg)?,
            Conn::Tcp(_) | Conn::Tls(_) => {
                return Err(io::Error::other("not a datagram transport"));
            }
        };
        if n != msg.len() {
            // A datagram socket sends all or nothing; a short count would be a kernel bug.
            return Err(io::Error::other("datagram cut short"));
        }
        Ok(())
    }

    /// Writes framed bytes to a stream (TCP and TLS only) and pushes them out of rustls.
    pub(super) fn write_stream(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(buf),
            Conn::Tls(s) => {
                s.write_all(buf)?;
                s.flush()
            }
            Conn::Unix(_) | Conn::Udp(_) => Err(io::Error::other("not a stream transport")),
        }
    }

    /// Whether a stream's receiver has closed its end. A receiver that exits (or restarts)
    /// closes its connections; the first write after that would still succeed into the dead
    /// socket's buffer and be lost, so the writer looks before each batch. (A receiver that
    /// vanishes without closing, or closes during a write, still costs what was in flight:
    /// plain TCP syslog has no acknowledgements.)
    pub(super) fn peer_closed(&mut self) -> bool {
        match self {
            Conn::Unix(_) | Conn::Udp(_) => false,
            Conn::Tcp(s) => {
                let mut b = [0u8; 1];
                nonblocking(s, |s| match s.peek(&mut b) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != io::ErrorKind::WouldBlock,
                })
            }
            Conn::Tls(s) => {
                // Read through rustls: TLS 1.3 servers send session tickets after the
                // handshake, so bytes waiting do not mean the end; close_notify or EOF do.
                let mut b = [0u8; 512];
                if s.sock.set_nonblocking(true).is_err() {
                    return true;
                }
                let closed = loop {
                    match s.read(&mut b) {
                        Ok(0) => break true,
                        Ok(_) => continue,
                        Err(e) => break e.kind() != io::ErrorKind::WouldBlock,
                    }
                };
                closed || s.sock.set_nonblocking(false).is_err()
            }
        }
    }
}

fn nonblocking(s: &TcpStream, f: impl FnOnce(&TcpStream) -> bool) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let closed = f(s);
    closed || s.set_nonblocking(false).is_err()
}
