//! The process's own edges: lines out on stdout, a message in from stdin, and the signals that ask
//! it to stop.

use std::io::{Read, Write};

use anyhow::anyhow;
use bytes::Bytes;

/// Writes one line to stdout and flushes it, so a reader sees each line as it happens.
pub(crate) fn print_line(line: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|e| anyhow!("cannot write to stdout: {e}"))
}

/// All of stdin, read on the blocking pool (the workspace's tokio has no `io-std`).
pub(crate) async fn read_stdin() -> anyhow::Result<Bytes> {
    let read = tokio::task::spawn_blocking(|| {
        let mut body = Vec::new();
        std::io::stdin().lock().read_to_end(&mut body).map(|_| body)
    })
    .await
    .map_err(|e| anyhow!("cannot read the message from stdin: {e}"))?;
    let body = read.map_err(|e| anyhow!("cannot read the message from stdin: {e}"))?;
    Ok(body.into())
}

/// Resolves on Ctrl-C, or on SIGTERM where there is one.
pub(crate) async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| anyhow!("cannot listen for SIGTERM: {e}"))?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted.map_err(|e| anyhow!("cannot listen for Ctrl-C: {e}")),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| anyhow!("cannot listen for Ctrl-C: {e}"))
    }
}
