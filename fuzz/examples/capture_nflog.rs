//! Records real NFLOG receive buffers for the `nflog_batch` seed corpus.
//!
//! `capture_nflog DIR SECONDS [GROUP]` binds GROUP (default 100) with the daemon's own socket code
//! ([`NflogSocket`]), prints `bound` once the kernel acknowledged, and writes every `recv()`
//! buffer, exactly as received, to `DIR/batch-NNNN.bin` until SECONDS pass with no message.
//! `fuzz/capture-seeds.sh` runs it inside a network namespace while it sends traffic.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netpol_nflog::source::socket::{NflogSocket, Recv, SocketTuning};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: capture_nflog DIR SECONDS [GROUP]";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let idle = Duration::from_secs_f64(args.next().ok_or(usage)?.parse()?);
    let group: u16 = args.next().map_or(Ok(100), |g| g.parse())?;
    std::fs::create_dir_all(&dir)?;

    // Small kernel batches (threshold 4, 10 ms) so the corpus holds batches of several sizes.
    let tuning = SocketTuning {
        copy_range: 0xffff,
        nlbufsiz: 16384,
        qthreshold: 4,
        timeout_cs: 1,
        rcvbuf: 4 << 20,
        conntrack: false,
    };
    let mut sock = NflogSocket::open(&[group], &tuning)?;
    println!("bound");
    std::io::stdout().flush()?;

    let mut n = 0usize;
    let mut save = |batch: &[u8]| -> std::io::Result<()> {
        n += 1;
        std::fs::write(dir.join(format!("batch-{n:04}.bin")), batch)
    };
    for batch in sock.take_pending() {
        save(&batch)?;
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut last = Instant::now();
    while last.elapsed() < idle {
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is a valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        match sock.recv(&mut buf) {
            Recv::Data(len) | Recv::Truncated(len) => {
                save(&buf[..len])?;
                last = Instant::now();
            }
            Recv::WouldBlock => {}
            Recv::Overrun => eprintln!("capture_nflog: the socket overran"),
        }
    }
    Ok(())
}
