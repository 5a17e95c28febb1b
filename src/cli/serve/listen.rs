//! The accept loop: each connection served by hyper (HTTP/1.1) with a deadline for its request headers, so that a
//! client that opens connections and never finishes a request (or leaves a kept-alive connection idle) holds nothing
//! for long. The router sees the address the client connected to ([`LocalAddr`]), which the `Host` check needs.

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a connection may take to send a request's headers, and stay idle between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The address of this machine that a connection reached (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// Serves connections until Ctrl-C.
pub async fn serve_connections(listener: TcpListener, router: Router) {
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted: go on shortly.
                    eprintln!("webr1: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let local = stream.local_addr().ok();
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                if let Some(local) = local {
                    request.extensions_mut().insert(LocalAddr(local));
                }
                tower_service::Service::call(&mut router.clone(), request.map(Body::new))
            });
            // An error here is the client's connection failing or timing out: nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
