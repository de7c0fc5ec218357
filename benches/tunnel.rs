//! Blind-tunnel throughput through the real gateway versus a direct loopback connection.
//! The origin streams a fixed payload; the client reads it to the end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark without its fixtures cannot run"
)]

use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PAYLOAD: usize = 64 * 1024 * 1024;

async fn start_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let chunk = vec![0x5a_u8; 256 * 1024];
        while let Ok((mut socket, _)) = listener.accept().await {
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let mut sent = 0;
                while sent < PAYLOAD {
                    if socket.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

async fn drain(mut stream: TcpStream) -> usize {
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let read = stream.read(&mut buffer).await.unwrap();
        if read == 0 {
            return total;
        }
        total += read;
    }
}

async fn through_tunnel(proxy: SocketAddr) -> usize {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(b"CONNECT bulk.example:443 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut established = [0u8; 39];
    stream.read_exact(&mut established).await.unwrap();
    assert!(established.starts_with(b"HTTP/1.1 200"));
    drain(stream).await
}

fn tunnel_throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (origin, gateway) = runtime.block_on(async {
        let origin = start_origin().await;
        let mut config = aigate::config::Config::default();
        config.proxy.listen = "127.0.0.1:0".parse().unwrap();
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        config.tls.ca_dir = dir.path().join("certs");
        config.store.url = format!("sqlite://{}", dir.path().join("aigate.db").display());
        config.audit.journal_dir = dir.path().join("journal");
        config.catalog.dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog");
        config
            .upstream
            .resolve
            .insert("bulk.example".into(), origin);
        (origin, aigate::server::start(config).await.unwrap())
    });
    let proxy = gateway.proxy_addr;

    let mut group = c.benchmark_group("tunnel_64MiB");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));
    group.sample_size(10);
    group.bench_function("direct", |b| {
        b.iter(|| {
            runtime.block_on(async { drain(TcpStream::connect(origin).await.unwrap()).await })
        })
    });
    group.bench_function("through_gateway", |b| {
        b.iter(|| runtime.block_on(through_tunnel(proxy)))
    });
    group.finish();
    runtime.block_on(gateway.shutdown());
}

criterion_group!(benches, tunnel_throughput);
criterion_main!(benches);
