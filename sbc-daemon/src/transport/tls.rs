//! SIP over TLS (RFC 3261 26.2, RFC 5630) with rustls. Server side: certificate chain and
//! key from the listener's configuration, optional client certificate verification against a
//! CA file. Client side, toward trunks: the trunk's certificate checked against the system CA
//! store or the trunk's `tls.ca` and its host name (or `tls.server_name`), and the sending
//! listener's certificate presented when the trunk asks for one. Both with a handshake
//! timeout, then the same stream handling as TCP.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portcullis_config::{TlsSettings, Trunk, TrunkTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, warn};

use super::flows::{FlowHandle, Outgoing};
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

/// The TLS client side toward one trunk: roots its certificate must chain to, the client
/// certificate presented when asked (that of the TLS listener the trunk is sent from), and
/// the name the certificate must be valid for (also the SNI).
#[derive(Clone)]
pub struct TrunkClient {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for TrunkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Builds the TLS client of `trunk`; `client_cert` is the TLS listener it sends from.
pub fn trunk_client(
    trunk: &Trunk,
    client_cert: Option<&TlsSettings>,
) -> Result<TrunkClient, TlsSetupError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = trunk.tls.clone().unwrap_or(TrunkTls {
        ca: None,
        server_name: None,
    });
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca {
        Some(ca) => {
            let certs = read_certs(ca).map_err(|e| TlsSetupError::Ca {
                path: ca.display().to_string(),
                reason: e.to_string(),
            })?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| TlsSetupError::Config(format!("{}: {e}", ca.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                debug!(error = %e, "system CA store");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsSetupError::Config(
                    "no CA certificate in the system store (install ca-certificates, or give \
                     the trunk a tls.ca file)"
                        .into(),
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client_cert {
        Some(l) => {
            let certs = read_certs(&l.certificate)?;
            let key =
                PrivateKeyDer::from_pem_file(&l.private_key).map_err(|e| TlsSetupError::Key {
                    path: l.private_key.display().to_string(),
                    reason: e.to_string(),
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsSetupError::Config(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    let host = settings.server_name.as_deref().unwrap_or(&trunk.host);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| TlsSetupError::Config(format!("server name {host:?}: {e}")))?;
    Ok(TrunkClient {
        connector: TlsConnector::from(Arc::new(config)),
        name,
    })
}

/// Opens an outbound TLS connection for `handle` (already registered, so messages queue
/// meanwhile) toward `trunk`: TCP from the listener's address, then the handshake, which
/// checks the trunk's certificate. On failure every queued message is reported.
pub fn connect(
    shared: Arc<Shared>,
    handle: FlowHandle,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    local_ip: std::net::IpAddr,
    trunk: String,
    client: TrunkClient,
) {
    tokio::spawn(async move {
        let tcp = match super::tcp::dial(&shared, handle.remote, local_ip).await {
            Ok(s) => s,
            Err(e) => {
                warn!(remote = %handle.remote, %trunk, error = %e, "TCP connect for TLS failed");
                shared.metrics.tcp_connect_failure();
                super::tcp::connect_failed(&shared, &handle, &mut rx);
                return;
            }
        };
        let handshake = client.connector.connect(client.name.clone(), tcp);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => {
                debug!(remote = %handle.remote, %trunk, conn = handle.id.0, "TLS connected");
                shared.tls_connected(handle.remote, &trunk);
                run_stream(shared, handle, tls, rx);
            }
            result => {
                let why = match result {
                    Ok(Err(e)) => e.to_string(),
                    _ => "handshake timed out".to_string(),
                };
                warn!(remote = %handle.remote, %trunk, name = ?client.name, error = %why, "TLS connection to trunk failed");
                shared.metrics.tls_client_failure(&trunk);
                super::tcp::connect_failed(&shared, &handle, &mut rx);
            }
        }
    });
}
