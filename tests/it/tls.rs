//! TLS on the sidecar's listener and on its forward connection, with and without client
//! certificates; certificates made for each run with the `openssl` command.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use crate::needs::{Need, need};
use crate::net::{Sidecar, wait_for};
use crate::support::{builtin_tagger, repo, temp_dir};

/// A CA, a server certificate for localhost / 127.0.0.1 and a client certificate.
pub(crate) struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// None when `openssl` is not installed (the test is then skipped, but fails under CI).
    pub(crate) fn new() -> Option<Pki> {
        need(Need::Program("openssl", &["/usr/bin/openssl"]))?;
        Some(Pki::create())
    }

    fn create() -> Pki {
        let dir = temp_dir("pki");
        let sh = |script: &str| {
            let out = Command::new("sh").arg("-c").arg(script).current_dir(&dir).output().expect("openssl (sh)");
            assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        sh(&format!("openssl req -x509 {key} -keyout ca.key -out ca.pem -days 2 -subj /CN=iis-tagger-test-ca"));
        for (name, ext) in [
            ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
            ("client", "subjectAltName=DNS:client.test\nextendedKeyUsage=clientAuth"),
        ] {
            std::fs::write(dir.join(format!("{name}.ext")), format!("basicConstraints=CA:FALSE\n{ext}\n"))
                .expect("ext");
            sh(&format!("openssl req {key} -keyout {name}.key -out {name}.csr -subj /CN={name}"));
            sh(&format!(
                "openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext"
            ));
        }
        Pki { dir }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for cert in certs(&self.dir.join("ca.pem")) {
            roots.add(cert).expect("CA");
        }
        roots
    }

    fn client_config(&self, with_cert: bool) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder().with_root_certificates(self.roots());
        Arc::new(if with_cert {
            builder
                .with_client_auth_cert(certs(&self.dir.join("client.pem")), key(&self.dir.join("client.key")))
                .expect("client")
        } else {
            builder.with_no_client_auth()
        })
    }
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path).expect("pem").collect::<Result<_, _>>().expect("certs")
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).expect("key")
}

/// Sends `bytes` over TLS and closes cleanly.
fn send_tls(addr: std::net::SocketAddr, config: Arc<ClientConfig>, bytes: &[u8]) -> std::io::Result<()> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").expect("name")).expect("client");
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(bytes)?;
    tls.conn.send_close_notify();
    tls.flush()?;
    // The server's answer to close_notify, or its refusal of the handshake.
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)?;
    Ok(())
}

fn sample() -> Vec<u8> {
    std::fs::read(repo("examples/sample.jsonl")).expect("sample")
}

#[test]
fn tls_listener_tags_like_the_stream_mode() {
    let Some(pki) = Pki::new() else { return };
    let sidecar = Sidecar::start(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
        "--metrics",
        "127.0.0.1:0",
    ]);
    send_tls(sidecar.addr, pki.client_config(false), &sample()).expect("TLS client");
    assert!(wait_for(Duration::from_secs(10), || sidecar.metric("iis_tagger_lines_total") == 18));
    let (status, out, err) = sidecar.stop();
    assert!(status.success(), "{err}");
    assert_eq!(out, builtin_tagger().tag_all(&sample()).0);
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate() {
    let Some(pki) = Pki::new() else { return };
    let sidecar = Sidecar::start(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
        "--tls-client-ca",
        &pki.path("ca.pem"),
        "--handshake-timeout-secs",
        "1",
        "--metrics",
        "127.0.0.1:0",
    ]);
    assert!(send_tls(sidecar.addr, pki.client_config(false), b"{\"refused\":1}\n").is_err(), "no client certificate");
    send_tls(sidecar.addr, pki.client_config(true), &sample()).expect("with a client certificate");
    // A client that connects and never starts the handshake is closed at its deadline.
    let mut silent = TcpStream::connect(sidecar.addr).expect("connect");
    silent.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 1];
    assert!(matches!(silent.read(&mut buf), Ok(0) | Err(_)));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(wait_for(Duration::from_secs(10), || sidecar.metric("iis_tagger_tls_handshake_failures_total") == 2));
    let (status, out, err) = sidecar.stop();
    assert!(status.success(), "{err}");
    assert_eq!(out, builtin_tagger().tag_all(&sample()).0, "only the authenticated client's records");
}

#[test]
fn tls_forward_with_a_client_certificate() {
    let Some(pki) = Pki::new() else { return };
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(pki.roots())).build().expect("verifier");
    let server = Arc::new(
        ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&pki.dir.join("server.pem")), key(&pki.dir.join("server.key")))
            .expect("server config"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let downstream = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        let mut tls = StreamOwned::new(ServerConnection::new(server).expect("conn"), tcp);
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("downstream TLS: {e}"),
            }
        }
        let peer_certs = tls.conn.peer_certificates().map_or(0, <[_]>::len);
        (got, peer_certs)
    });
    let sidecar = Sidecar::start(&[
        "--forward",
        &format!("localhost:{}", addr.port()),
        "--forward-tls-ca",
        &pki.path("ca.pem"),
        "--forward-tls-cert",
        &pki.path("client.pem"),
        "--forward-tls-key",
        &pki.path("client.key"),
    ]);
    let mut conn = sidecar.connect();
    conn.write_all(&sample()).expect("send");
    drop(conn);
    std::thread::sleep(Duration::from_millis(500));
    let (status, _, err) = sidecar.stop();
    assert!(status.success(), "{err}");
    let (got, peer_certs) = downstream.join().expect("downstream");
    assert_eq!(peer_certs, 1, "the sidecar presented its client certificate");
    assert_eq!(got, builtin_tagger().tag_all(&sample()).0);
}

#[test]
fn unusable_tls_files_are_named_at_start_up() {
    let Some(pki) = Pki::new() else { return };
    std::fs::write(pki.dir.join("empty.pem"), "").expect("write");
    for (args, says) in [
        (vec!["serve", "--tls-cert", &pki.path("empty.pem"), "--tls-key", &pki.path("server.key")], "empty.pem"),
        (vec!["serve", "--tls-cert", &pki.path("server.pem"), "--tls-key", &pki.path("empty.pem")], "empty.pem"),
        (vec!["serve", "--tls-cert", &pki.path("server.pem"), "--tls-key", &pki.path("client.key")], "server.pem"),
        (vec!["serve", "--forward", "localhost:1", "--forward-tls-ca", &pki.path("missing.pem")], "missing.pem"),
    ] {
        let out = crate::net::bin().args(&args).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
