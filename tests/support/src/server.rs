//! A loopback HTTP/1.1 server on its own runtime thread.
//!
//! Both test servers (the mock model and the MCP server) run here rather than
//! on the test's runtime: a `#[tokio::test]` runtime is single-threaded and
//! only polls the servers while the test awaits, so a test that blocks (or
//! uses a plain `#[test]`) would deadlock against its own server. Dropping
//! [`Background`] shuts the runtime down, which closes every open connection;
//! that is how a stalled response ends.

use std::{convert::Infallible, io, net::SocketAddr};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::{body::Incoming, server::conn::http1, service::Service};
use hyper_util::rt::TokioIo;
use tokio::runtime::Runtime;

/// The response type both servers produce.
pub(crate) type HttpResponse = Response<BoxBody<Bytes, Infallible>>;

/// A running server; dropping it stops the server and its connections.
pub(crate) struct Background {
    rt: Option<Runtime>,
    addr: SocketAddr,
}

impl Background {
    /// Binds 127.0.0.1 on a free port and serves every connection with a
    /// clone of `service`.
    pub(crate) fn serve<S>(name: &str, service: S) -> io::Result<Self>
    where
        S: Service<Request<Incoming>, Response = HttpResponse, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // e.g. out of file descriptors: back off instead of spinning
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let io = TokioIo::new(stream);
                    let _ = http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Ok(Self { rt: Some(rt), addr })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // `shutdown_background` does not block, so dropping a server inside an
        // async test is fine (a plain `Runtime` drop would panic there).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
