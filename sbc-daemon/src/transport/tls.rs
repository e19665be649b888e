//! SIP over TLS (RFC 3261 26.2, RFC 5630) with rustls. Server side: certificate chain and
//! key from the listener's configuration, optional client certificate verification against a
//! CA file. Client side, toward trunks: the trunk's certificate checked against the system CA
//! store or the trunk's `tls.ca` and its host name (or `tls.server_name`), and the sending
//! listener's certificate presented when the trunk asks for one. Both with a handshake
//! timeout, then the same stream handling as TCP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use portcullis_config::{TlsSettings, Trunk, TrunkTls};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
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

/// A listener's certificate chain and key, read from its files at start and again on
/// [`CertSource::reload`] (sbcd does that on SIGHUP), so that a renewed certificate is used by
/// every new connection without a restart; open connections keep the one they started with.
/// It serves as the server certificate of the listener and as the client certificate of
/// the TLS trunks sent from it.
pub struct CertSource {
    certificate: PathBuf,
    private_key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSource")
            .field("certificate", &self.certificate)
            .field("private_key", &self.private_key)
            .finish_non_exhaustive()
    }
}

impl CertSource {
    /// Reads the listener's certificate chain and key (they must match).
    pub fn load(settings: &TlsSettings) -> Result<Arc<CertSource>, TlsSetupError> {
        let key = read_certified_key(&settings.certificate, &settings.private_key)?;
        Ok(Arc::new(CertSource {
            certificate: settings.certificate.clone(),
            private_key: settings.private_key.clone(),
            current: RwLock::new(Arc::new(key)),
        }))
    }

    /// Re-reads the files. On any error (unreadable, no certificate, key not matching the
    /// certificate) the previous certificate stays in use and the error is returned.
    pub fn reload(&self) -> Result<(), TlsSetupError> {
        let key = read_certified_key(&self.certificate, &self.private_key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// The certificate file (for logs).
    pub fn path(&self) -> &Path {
        &self.certificate
    }

    /// When the end-entity certificate in use expires (Unix time); None if it cannot be
    /// parsed (rustls accepted it, so that would be an unusual encoding).
    pub fn not_after(&self) -> Option<i64> {
        let key = self.get();
        let der = key.cert.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        Some(cert.validity().not_after.timestamp())
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertSource {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for CertSource {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn read_certified_key(
    certificate: &Path,
    private_key: &Path,
) -> Result<CertifiedKey, TlsSetupError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = read_certs(certificate)?;
    let key = PrivateKeyDer::from_pem_file(private_key).map_err(|e| TlsSetupError::Key {
        path: private_key.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| TlsSetupError::Key {
        path: private_key.display().to_string(),
        reason: format!(
            "unusable with the certificate {}: {e}",
            certificate.display()
        ),
    })
}

/// Builds the acceptor of a TLS or WSS listener, serving the certificate of `source`.
pub fn acceptor(
    settings: &TlsSettings,
    source: Arc<CertSource>,
) -> Result<TlsAcceptor, TlsSetupError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
    Ok(TlsAcceptor::from(Arc::new(
        config.with_cert_resolver(source),
    )))
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

/// The system's CA store, read once for all the trunks that use it.
#[derive(Default)]
pub struct SystemRoots(Option<Arc<rustls::RootCertStore>>);

impl SystemRoots {
    fn get(&mut self) -> Result<Arc<rustls::RootCertStore>, TlsSetupError> {
        if let Some(r) = &self.0 {
            return Ok(r.clone());
        }
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            debug!(error = %e, "system CA store");
        }
        let mut roots = rustls::RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(TlsSetupError::Config(
                "no CA certificate in the system store (install ca-certificates, or give the \
                 trunk a tls.ca file)"
                    .into(),
            ));
        }
        let roots = Arc::new(roots);
        self.0 = Some(roots.clone());
        Ok(roots)
    }
}

/// Builds the TLS client of `trunk`; `client_cert` is the certificate of the TLS listener
/// it sends from; `system` the system's CA store, for a trunk without `tls.ca`.
pub fn trunk_client(
    trunk: &Trunk,
    client_cert: Option<Arc<CertSource>>,
    system: &mut SystemRoots,
) -> Result<TrunkClient, TlsSetupError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = trunk.tls.clone().unwrap_or(TrunkTls {
        ca: None,
        server_name: None,
    });
    let roots = match &settings.ca {
        Some(ca) => {
            let certs = read_certs(ca).map_err(|e| TlsSetupError::Ca {
                path: ca.display().to_string(),
                reason: e.to_string(),
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| TlsSetupError::Config(format!("{}: {e}", ca.display())))?;
            }
            Arc::new(roots)
        }
        None => system.get()?,
    };
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client_cert {
        Some(source) => builder.with_client_cert_resolver(source),
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
