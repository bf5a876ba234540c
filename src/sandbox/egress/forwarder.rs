//! The in-sandbox half of egress: inside a sandbox's network namespace (where only `lo` exists)
//! it listens on `127.0.0.1:<port>` and carries each TCP connection, byte for byte, to the
//! engine's [`super::proxy`] Unix socket. Programs see an ordinary `HTTPS_PROXY`.
//!
//! It decides nothing (the proxy does) and needs no tokio runtime from its caller: [`bind`]
//! binds synchronously, so a bind error is reported before the target program starts, and
//! [`Bound::start`] serves from its own thread on a current-thread runtime. The sandbox
//! trampoline binds after bringing `lo` up and before starting the target, and starts the
//! thread only when the first connection waits in the backlog (most programs never use the
//! proxy: no thread, no runtime for them); by then the trampoline has restricted itself, so the
//! thread runs under the same Landlock domain and without capabilities. It keeps the returned
//! [`Forwarder`] until the target is gone: dropping it stops the thread. The socket path must be
//! reachable from the trampoline's mount view.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::{TcpListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connections carried at once. At the limit the forwarder stops accepting until one ends (the
/// kernel's backlog holds the rest), so a runaway process cannot exhaust the trampoline.
const MAX_CONNECTIONS: usize = 64;

/// A running forwarder; dropping it stops it (connections in flight end with it).
#[derive(Debug)]
pub(crate) struct Forwarder {
    /// Where it listens.
    #[allow(
        dead_code,
        reason = "read by tests; the trampoline knows its fixed port"
    )]
    pub(crate) addr: SocketAddr,
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A forwarder's port, bound and listening, with no thread yet: connections wait in the
/// kernel's backlog until [`Bound::start`].
#[derive(Debug)]
pub(crate) struct Bound {
    listener: StdListener,
    socket: PathBuf,
}

/// Listens on `127.0.0.1:port` (`0`: any free port) for a forwarder to the Unix socket at
/// `socket`, without serving yet.
pub(crate) fn bind(port: u16, socket: PathBuf) -> io::Result<Bound> {
    let listener = StdListener::bind((Ipv4Addr::LOCALHOST, port))?;
    listener.set_nonblocking(true)?;
    Ok(Bound { listener, socket })
}

/// Listens on `127.0.0.1:port` (`0`: any free port, see [`Forwarder::addr`]) and forwards every
/// connection to the Unix socket at `socket`, from a new thread.
#[cfg(test)]
pub(crate) fn spawn(port: u16, socket: PathBuf) -> io::Result<Forwarder> {
    bind(port, socket)?.start()
}

impl Bound {
    /// The listening socket: readable when a connection waits.
    pub(crate) fn listener(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.listener)
    }

    /// Serves the waiting and every later connection from a new thread.
    pub(crate) fn start(self) -> io::Result<Forwarder> {
        let Bound { listener, socket } = self;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("egress-forwarder".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tokio::select! {
                                _ = stopped.cancelled() => {}
                                _ = serve(listener, Arc::new(socket)) => {}
                            }
                        }
                        Err(e) => tracing::warn!("egress forwarder cannot listen: {e}"),
                    }
                });
            })?;
        Ok(Forwarder {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

async fn serve(listener: TcpListener, socket: Arc<PathBuf>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (mut tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: the next accept may succeed.
                tracing::warn!("egress forwarder accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let socket = socket.clone();
        tokio::spawn(async move {
            // A proxy that is gone leaves the client with a closed connection, as a refused
            // upstream would.
            if let Ok(mut unix) = UnixStream::connect(socket.as_path()).await {
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
            }
            drop(permit);
        });
    }
}
