//! L4 routing over real sockets: a TCPRoute forwards raw bytes, and TLSRoutes on a
//! TLS passthrough listener pick the backend by the ClientHello's server name while
//! the TLS session runs end to end between the client and the backend (Gatehouse
//! holds no certificate for these names).

mod support;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use support::tls::{handshake, Ca};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP backend that answers each read with `name:` and the bytes it read.
async fn tcp_echo(name: &'static str) -> SocketAddr {
    listen(move |mut s| async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut out = format!("{name}:").into_bytes();
            out.extend_from_slice(&buf[..n]);
            if s.write_all(&out).await.is_err() {
                break;
            }
        }
    })
    .await
}

/// A TLS backend with its own certificate for `names`; it answers with its name.
async fn tls_backend(ca: &Ca, names: &[&str], name: &'static str) -> SocketAddr {
    let (cert, key, _) = ca.leaf(names);
    let certs: Vec<CertificateDer<'static>> =
        rustls::pki_types::pem::PemObject::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .expect("cert");
    let key: PrivateKeyDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(key.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    listen(move |s| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(s).await else {
                return;
            };
            let mut buf = [0u8; 64];
            if let Ok(n) = tls.read(&mut buf).await {
                let _ = tls
                    .write_all(
                        format!("{name} got {}", String::from_utf8_lossy(&buf[..n])).as_bytes(),
                    )
                    .await;
                let _ = tls.shutdown().await;
            }
        }
    })
    .await
}

const GATEWAY: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  gatewayClassName: gatehouse
  listeners:
  - {name: db, protocol: TCP, port: 5432}
  - name: pass
    protocol: TLS
    port: 8443
    tls: {mode: Passthrough}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: db}]
  rules: [{backendRefs: [{name: db, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: a, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: pass}]
  hostnames: [a.pass.example]
  rules: [{backendRefs: [{name: a, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: b, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: pass}]
  hostnames: ['*.b.example']
  rules: [{backendRefs: [{name: b, port: 80}]}]
";

async fn read_all<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn tcp_and_tls_passthrough_routes() {
    let ca = Ca::new();
    let db = tcp_echo("db").await;
    let a = tls_backend(&ca, &["a.pass.example"], "a").await;
    let b = tls_backend(&ca, &["x.b.example"], "b").await;
    let all = [
        service("default", "db", db, None),
        service("default", "a", a, None),
        service("default", "b", b, None),
        GATEWAY.to_string(),
    ]
    .concat();
    let (p, ports) = start_proxy(
        &[("classes.yaml", CLASSES), ("all.yaml", &all)],
        &[5432, 8443],
    )
    .await;
    let (tcp, pass) = (ports[0], ports[1]);

    // TCP: bytes both ways, several exchanges on one connection.
    let mut s = tokio::net::TcpStream::connect(tcp).await.expect("connect");
    for msg in ["hello", "again"] {
        s.write_all(msg.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 3 + msg.len()];
        s.read_exact(&mut buf).await.expect("read");
        assert_eq!(String::from_utf8_lossy(&buf), format!("db:{msg}"));
    }
    drop(s);

    // TLS passthrough: the client verifies the backend's own certificate.
    for (sni, want) in [("a.pass.example", "a"), ("x.b.example", "b")] {
        let (mut tls, leaf) = handshake(&ca, pass, sni, &[]).await;
        assert!(!leaf.is_empty());
        tls.write_all(b"ping").await.expect("write");
        assert_eq!(
            read_all(&mut tls).await,
            format!("{want} got ping"),
            "{sni}"
        );
    }
    // A name no TLSRoute claims: the connection is closed before any handshake.
    let mut s = tokio::net::TcpStream::connect(pass).await.expect("connect");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls::pki_types::ServerName::try_from("nobody.example").expect("name");
    let refused = connector.connect(name, &mut s).await;
    assert!(refused.is_err(), "no backend for an unclaimed name");

    // Status: both kinds accepted, the L4 listeners count their routes.
    let config = get(&client(), p.admin, "admin", "/config").await.json();
    assert_eq!(config["summary"]["tcp_routes"], 1, "{config}");
    assert_eq!(config["summary"]["tls_routes"], 2, "{config}");

    // Every connection is a flow record: where it went, how it ended, its bytes.
    let c = client();
    let start = std::time::Instant::now();
    let flows = loop {
        let flows = get(&c, p.admin, "admin", "/flows").await.json();
        let list = flows.as_array().cloned().unwrap_or_default();
        if list.len() >= 4 || start.elapsed() > std::time::Duration::from_secs(5) {
            break list;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let tcp_flow = flows
        .iter()
        .find(|f| f["listener"] == tcp.to_string())
        .unwrap_or_else(|| panic!("a TCP flow: {flows:?}"));
    assert_eq!(tcp_flow["verdict"], "forwarded", "{tcp_flow}");
    assert_eq!(tcp_flow["endpoint"], db.to_string(), "{tcp_flow}");
    assert_eq!(tcp_flow["bytesIn"], 10, "{tcp_flow}");
    assert_eq!(tcp_flow["bytesOut"], 16, "{tcp_flow}");
    assert!(
        flows.iter().any(|f| f["serverName"] == "a.pass.example"
            && f["verdict"] == "forwarded"
            && f["endpoint"] == a.to_string()),
        "{flows:?}"
    );
    assert!(
        flows
            .iter()
            .any(|f| f["serverName"] == "nobody.example" && f["verdict"] == "no_route"),
        "{flows:?}"
    );
    let metrics = get(&c, p.admin, "admin", "/metrics").await.body;
    assert!(
        metrics.contains("gatehouse_l4_connections_total{verdict=\"no_route\"} 1"),
        "{metrics}"
    );
}
