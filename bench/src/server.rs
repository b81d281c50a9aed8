//! The benchmark's TCP server: answers a 16-byte request with a 64-byte
//! response on every address of its netns (it binds 0.0.0.0, and the netns
//! owns the whole backend range through an AnyIP route).
//!
//! It never closes first: the client resets the connection after reading the
//! response, so neither side keeps TIME_WAIT state that a later connection
//! with the same tuple would trip over (PAWS).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub const REQUEST_LEN: usize = 16;
pub const RESPONSE_LEN: usize = 64;
const BACKLOG: u32 = 8192;

/// Serves until stdin closes (the orchestrator is done or gone) or
/// `lifetime` has passed, printing `ready` on stdout once it listens.
pub fn run(port: u16, workers: usize, lifetime: Duration) -> Result<()> {
    // A plain thread watches stdin (tokio's stdin needs a feature the
    // workspace does not enable).
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = closed_tx.send(());
    });
    run_until(port, workers, closed_rx, lifetime, || println!("ready"))
}

/// Serves until `stop` fires (or its sender is dropped) or `lifetime` has
/// passed; calls `ready` once it listens.
pub fn run_until(
    port: u16,
    workers: usize,
    stop: tokio::sync::oneshot::Receiver<()>,
    lifetime: Duration,
    ready: impl FnOnce(),
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        // One SO_REUSEPORT listener per worker spreads accepts over the cores.
        for _ in 0..workers {
            listeners.push(listen(port)?);
        }
        for listener in listeners {
            tokio::spawn(accept_loop(listener));
        }
        ready();
        tokio::select! {
            () = tokio::time::sleep(lifetime) => {}
            _ = stop => {}
        }
        Ok(())
    })
}

fn listen(port: u16) -> Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket
        .bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        .with_context(|| format!("cannot bind port {port}"))?;
    Ok(socket.listen(BACKLOG)?)
}

async fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_one(stream));
            }
            // EMFILE and friends: back off briefly rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

async fn serve_one(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut request = [0u8; REQUEST_LEN];
    if stream.read_exact(&mut request).await.is_err() {
        return;
    }
    if stream.write_all(&[b'x'; RESPONSE_LEN]).await.is_err() {
        return;
    }
    // Wait for the client's reset (or FIN) so the client closes first.
    let mut rest = [0u8; 64];
    while let Ok(n) = stream.read(&mut rest).await {
        if n == 0 {
            break;
        }
    }
}
