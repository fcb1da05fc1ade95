//! TLS settings from PEM files, checked at start-up: a file that cannot be used is named
//! with what is wrong with it.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::Error;

/// The forward connection's TLS: how to connect and the name to verify.
#[derive(Clone)]
pub struct Client {
    /// The connector.
    pub connector: TlsConnector,
    /// The name the server's certificate must hold.
    pub server_name: ServerName<'static>,
}

fn setup(path: &Path, what: &'static str, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Tls { file: path.to_path_buf(), what, cause: cause.into() }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| setup(path, "reading certificates", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup(path, "reading certificates", e))?;
    if certs.is_empty() {
        return Err(setup(path, "reading certificates", "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| setup(path, "reading the private key", e))
}

fn roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| setup(path, "a CA certificate", e))?;
    }
    Ok(roots)
}

/// The listener's TLS; with `client_ca`, clients must present a certificate it signed.
pub fn acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsAcceptor, Error> {
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder(Arc::new(roots(ca)?)).build().map_err(|e| setup(ca, "client CA", e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certificates(cert)?, private_key(key)?)
        .map_err(|e| setup(cert, "certificate and key", e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The forward connection's TLS, trusting `ca`; with `client`, presenting that
/// certificate and key. The server name is `server_name`, else the host of `forward`.
pub fn connector(
    ca: &Path,
    client: Option<(&Path, &Path)>,
    server_name: Option<&str>,
    forward: &str,
) -> Result<Client, Error> {
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots(ca)?);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| setup(cert, "client certificate and key", e))?,
        None => builder.with_no_client_auth(),
    };
    let host = match server_name {
        Some(name) => name.to_string(),
        None => host_of(forward).ok_or_else(|| Error::Address(forward.to_string()))?,
    };
    let server_name = ServerName::try_from(host.clone()).map_err(|cause| Error::ServerName { name: host, cause })?;
    Ok(Client { connector: TlsConnector::from(Arc::new(config)), server_name })
}

/// Refuses a downstream address that is not `HOST:PORT`.
pub fn check_addr(addr: &str) -> Result<(), Error> {
    host_of(addr).map(|_| ()).ok_or_else(|| Error::Address(addr.to_string()))
}

/// The host of `HOST:PORT` or `[V6]:PORT`.
fn host_of(addr: &str) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("siem.example.com:6514").as_deref(), Some("siem.example.com"));
        assert_eq!(host_of("[::1]:6514").as_deref(), Some("::1"));
        assert_eq!(host_of("127.0.0.1:1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_of("nohost"), None);
        assert_eq!(host_of(":80"), None);
    }
}
