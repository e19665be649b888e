//! SIP over TLS (RFC 3261 26.2, RFC 5630) with rustls: certificate chain and key from the
//! listener's configuration, optional client certificate verification against a CA file,
//! handshake timeout, then the same stream handling as TCP.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portcullis_config::TlsSettings;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::stream::run_stream;
use super::{ListenerId, Transport};
use crate::server::Shared;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum TlsSetupError {
    #[error("cannot read certificate chain {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("cannot read private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("cannot read CA file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("TLS configuration rejected: {0}")]
    Config(String),
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let err = |reason: String| TlsSetupError::Certificate {
        path: path.display().to_string(),
        reason,
    };
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect();
    let certs = certs.map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

/// Builds the acceptor of a TLS or WSS listener.
pub fn acceptor(settings: &TlsSettings) -> Result<TlsAcceptor, TlsSetupError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = read_certs(&settings.certificate)?;
    let key =
        PrivateKeyDer::from_pem_file(&settings.private_key).map_err(|e| TlsSetupError::Key {
            path: settings.private_key.display().to_string(),
            reason: e.to_string(),
        })?;
    let builder = rustls::ServerConfig::builder();
    let config = if settings.verify_client {
        let Some(ca) = &settings.ca else {
            return Err(TlsSetupError::Config(
                "verify_client needs a `ca` file".into(),
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        let ca_certs = read_certs(ca).map_err(|e| TlsSetupError::Ca {
            path: ca.display().to_string(),
            reason: e.to_string(),
        })?;
        for c in ca_certs {
            roots
                .add(c)
                .map_err(|e| TlsSetupError::Config(e.to_string()))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| TlsSetupError::Config(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = config
        .with_single_cert(certs, key)
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TLS connections until the listener fails.
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: ListenerId,
    tcp: TcpListener,
    acceptor: TlsAcceptor,
) {
    loop {
        let (stream, remote) = match tcp.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "TLS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        super::tcp::tune(&stream, shared.io.tcp_keepalive);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let (handle, rx) = shared.flows.register(listener, Transport::Tls, remote);
                    debug!(%remote, conn = handle.id.0, "accepted TLS connection");
                    run_stream(shared, handle, tls, rx);
                }
                Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake failed"),
                Err(_) => debug!(%remote, "TLS handshake timed out"),
            }
        });
    }
}
