//! Creating a CA and the certificates a cluster needs, for local clusters and tests (`raftkv certs`).
//! Production deployments will usually bring certificates from their own PKI; anything that puts
//! [`crate::node_name`] in a node's subject alternative names works.

use crate::node_name;
use anyhow::Context;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::time::{SystemTime, UNIX_EPOCH};

/// How long generated certificates are valid, in years from the start of the current year.
const VALID_YEARS: i32 = 10;

/// A certificate and its private key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A freshly generated certificate authority that signs node and client certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    issued: Issued,
}

impl Authority {
    /// A new CA named after `cluster_id`.
    pub fn new(cluster_id: &str) -> anyhow::Result<Authority> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("raftkv CA for {cluster_id}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params);
        let key = KeyPair::generate().context("cannot generate the CA key")?;
        let cert = params.self_signed(&key)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Authority {
            issuer: Issuer::new(params, key),
            issued,
        })
    }

    /// The CA's own certificate and key.
    pub fn ca(&self) -> &Issued {
        &self.issued
    }

    /// A certificate for node `id`, valid as a TLS server and client, naming [`node_name`]`(id)` and
    /// `hosts` (the host parts of the node's addresses, so clients dialling them can check it too).
    pub fn issue_node(&self, id: u64, hosts: &[String]) -> anyhow::Result<Issued> {
        let mut names = vec![node_name(id)];
        for host in hosts {
            if !names.contains(host) {
                names.push(host.clone());
            }
        }
        self.issue(&format!("raftkv node {id}"), names)
    }

    /// A certificate for a client of a client port that demands one.
    pub fn issue_client(&self, name: &str) -> anyhow::Result<Issued> {
        self.issue(name, Vec::new())
    }

    fn issue(&self, common_name: &str, names: Vec<String>) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::new(names)
            .with_context(|| format!("invalid name in the certificate for {common_name}"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        set_validity(&mut params);
        let key = KeyPair::generate().context("cannot generate a key")?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// From the start of last year (so a clock somewhat behind still accepts it) for [`VALID_YEARS`].
fn set_validity(params: &mut CertificateParams) {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    // Mean Gregorian year; being off by a day at New Year only moves the start a year back.
    let year = 1970 + (seconds / 31_556_952) as i32;
    params.not_before = date_time_ymd(year - 1, 1, 1);
    params.not_after = date_time_ymd(year + VALID_YEARS, 1, 1);
}
