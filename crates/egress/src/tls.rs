//! TLS for intercepted hosts: a certificate authority made in memory for one sandbox (its
//! certificate goes into the sandbox's CA bundle, its key never leaves this process), leaf
//! certificates it signs for the CONNECT hosts listed for a secret, and the client side
//! that connects upstream with normal verification against the host's roots (or the
//! `ProxyConfig::upstream_roots` file).
//!
//! The CA is constrained: path length 0, and a leaf is only ever made for the CONNECT
//! target the proxy itself connects to, whatever the client's SNI says. Its key is kept as
//! PKCS#8 DER in zeroizing memory; a transient signer is made from it per leaf (rcgen and
//! ring do not zeroize their own copies, which live only while a leaf is signed). This
//! module must never write a key anywhere, nor make a leaf for a host no secret lists.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use zeroize::Zeroizing;

use crate::target::{Host, Target};

/// How long the CA and its leaves are valid around now: long enough for any invocation
/// and for clock skew, short enough to be worthless later.
const VALIDITY: time::Duration = time::Duration::days(2);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the roots upstream certificates are verified against: the PEM file `path`
/// instead of the host's store when given.
pub(crate) fn roots(path: Option<&Path>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match path {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("read the CA file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("read the CA file {}: {e}", path.display()))?;
                store
                    .add(cert)
                    .map_err(|e| format!("a certificate in {}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
        }
    }
    if store.is_empty() {
        return Err(match path {
            Some(path) => format!("no CA certificate in {}", path.display()),
            None => "no CA certificate in the host's trust store".to_string(),
        });
    }
    Ok(store)
}

/// The client side toward intercepted upstreams.
pub(crate) fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The name the upstream's certificate must carry (and the SNI sent).
pub(crate) fn server_name(target: &Target) -> Result<ServerName<'static>, String> {
    match &target.host {
        Host::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
        Host::Name(name) => ServerName::try_from(name.clone())
            .map_err(|e| format!("{name} is not a valid TLS server name: {e}")),
    }
}

/// One sandbox's certificate authority and the leaves it has made.
pub(crate) struct Authority {
    params: CertificateParams,
    key: Zeroizing<Vec<u8>>,
    /// The CA certificate, for the sandbox's bundle and every leaf's chain.
    cert: CertificateDer<'static>,
    pem: String,
    /// One key for every leaf of this sandbox.
    leaf_key: Zeroizing<Vec<u8>>,
    leaves: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

fn window() -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - VALIDITY, now + VALIDITY)
}

impl Authority {
    pub(crate) fn new() -> Result<Authority, String> {
        let fail = |e: rcgen::Error| format!("make the sandbox's certificate authority: {e}");
        let key = KeyPair::generate().map_err(fail)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "nanoclaw sandbox egress CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = window();
        let cert = params.self_signed(&key).map_err(fail)?;
        let leaf_key = KeyPair::generate().map_err(fail)?;
        Ok(Authority {
            pem: cert.pem(),
            cert: cert.der().clone(),
            key: Zeroizing::new(key.serialize_der()),
            params,
            leaf_key: Zeroizing::new(leaf_key.serialize_der()),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM: what the sandbox trusts. No key in it.
    pub(crate) fn pem(&self) -> &str {
        &self.pem
    }

    /// The server side for a connection to `target`, with a leaf for its host.
    pub(crate) fn server_config(&self, target: &Target) -> Result<Arc<ServerConfig>, String> {
        let host = match &target.host {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(name) => name.to_ascii_lowercase(),
        };
        let mut leaves = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(config) = leaves.get(&host) {
            return Ok(Arc::clone(config));
        }
        let config = Arc::new(self.make_leaf(&host)?);
        leaves.insert(host, Arc::clone(&config));
        Ok(config)
    }

    fn make_leaf(&self, host: &str) -> Result<ServerConfig, String> {
        let fail = |e: rcgen::Error| format!("make a certificate for {host}: {e}");
        let ca_key = KeyPair::try_from(self.key.as_slice()).map_err(fail)?;
        let issuer = Issuer::from_params(&self.params, &ca_key);
        let leaf_key = KeyPair::try_from(self.leaf_key.as_slice()).map_err(fail)?;
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(fail)?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = window();
        let leaf = params.signed_by(&leaf_key, &issuer).map_err(fail)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.to_vec()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), self.cert.clone()], key)
            .map_err(|e| format!("use the certificate for {host}: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_pem_holds_one_certificate_and_no_key() {
        let ca = Authority::new().unwrap();
        assert_eq!(ca.pem().matches("BEGIN CERTIFICATE").count(), 1);
        assert!(!ca.pem().contains("PRIVATE KEY"), "{}", ca.pem());
        let a = ca
            .server_config(&Target::parse_authority("API.test:443", None).unwrap())
            .unwrap();
        let b = ca
            .server_config(&Target::parse_authority("api.test:8443", None).unwrap())
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        ca.server_config(&Target::parse_authority("127.0.0.1:443", None).unwrap())
            .unwrap();
    }
}
