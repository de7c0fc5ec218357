//! The management listener: health, metrics and the CA download.

use crate::support::{upstream_ca, TestGateway};

#[tokio::test]
async fn health_metrics_and_ca_download() {
    let ca = upstream_ca();
    let gateway = TestGateway::start(&ca, &[]).await;
    let base = format!("http://{}", gateway.gateway.admin_addr);
    let client = reqwest::Client::new();

    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let ready: serde_json::Value = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ready["catalog_services"].as_u64().unwrap() >= 20);

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "aigate_connections_total",
        "aigate_requests_total",
        "aigate_tunnel_bytes_total",
        "aigate_cert_cache_hits_total",
        "aigate_cert_mint_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }

    let pem = client.get(format!("{base}/ca.pem")).send().await.unwrap();
    assert_eq!(pem.headers()["content-type"], "application/x-pem-file");
    assert_eq!(pem.text().await.unwrap(), gateway.ca_pem());
}
