//! TLS for listeners: rustls with ALPN `h2` and `http/1.1`.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::config::ListenerTlsConfig;

/// Builds the server config; errors name the file and the problem.
pub(crate) fn server_config(
    cfg: &ListenerTlsConfig,
    at: &str,
) -> Result<Arc<rustls::ServerConfig>, balancer::config::ConfigError> {
    use balancer::config::ConfigError as E;
    let certs = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            E::new(
                format!("{at}.tls.cert_file"),
                format!("cannot read `{}`: {e}", cfg.cert_file.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(E::new(
            format!("{at}.tls.cert_file"),
            "no certificate in file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| {
        E::new(
            format!("{at}.tls.key_file"),
            format!("cannot read `{}`: {e}", cfg.key_file.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| E::new(format!("{at}.tls"), e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            E::new(
                format!("{at}.tls"),
                format!("certificate and key do not fit: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
