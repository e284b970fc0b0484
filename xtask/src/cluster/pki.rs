//! The local cluster's PKI: one CA signing every serving and client certificate, plus the
//! service-account signing key. Written under `target/cluster/pki/`.

use std::{fs, net::IpAddr, path::Path};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its key, as PEM.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The certificate authority of the local cluster.
pub struct Ca {
    pub pair: Pair,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn generate() -> Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kubectl-nodehealth local cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let pair = Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Ca {
            pair,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA `up` generated, from its PEM files (for certificates issued by faults).
    pub fn load(cert: &Path, key: &Path) -> Result<Ca> {
        let cert_pem = fs::read_to_string(cert).with_context(|| format!("reading {cert:?}"))?;
        let key_pem = fs::read_to_string(key).with_context(|| format!("reading {key:?}"))?;
        let signing_key = KeyPair::from_pem(&key_pem).context("parsing the CA key")?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, signing_key)
            .context("parsing the CA certificate")?;
        Ok(Ca {
            pair: Pair { cert_pem, key_pem },
            issuer,
        })
    }

    /// Issues a leaf certificate. `validity` counts from now; `not_before` is `backdate` back
    /// (an hour by default) so small clock differences never make a fresh certificate "not yet
    /// valid".
    pub fn issue(&self, leaf: &Leaf) -> Result<Pair> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, &leaf.cn);
        for o in &leaf.orgs {
            params
                .distinguished_name
                .push(DnType::OrganizationName, o.as_str());
        }
        params.subject_alt_names = leaf
            .dns
            .iter()
            .map(|d| Ok(SanType::DnsName(d.as_str().try_into()?)))
            .chain(leaf.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match leaf.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        let now = OffsetDateTime::now_utc();
        params.not_before = now - leaf.backdate;
        params.not_after = now + leaf.validity;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Whether a leaf certificate serves or authenticates a client.
pub enum Usage {
    Server,
    Client,
}

/// What a leaf certificate says.
pub struct Leaf {
    pub cn: String,
    pub orgs: Vec<String>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub usage: Usage,
    pub validity: Duration,
    /// How long before now the certificate becomes valid.
    pub backdate: Duration,
}

impl Leaf {
    pub fn client(cn: &str, orgs: &[&str]) -> Leaf {
        Leaf {
            cn: cn.to_string(),
            orgs: orgs.iter().map(|o| o.to_string()).collect(),
            dns: Vec::new(),
            ips: Vec::new(),
            usage: Usage::Client,
            validity: Duration::days(365),
            backdate: Duration::hours(1),
        }
    }

    pub fn server(cn: &str, dns: &[&str], ips: &[IpAddr]) -> Leaf {
        Leaf {
            cn: cn.to_string(),
            orgs: Vec::new(),
            dns: dns.iter().map(|d| d.to_string()).collect(),
            ips: ips.to_vec(),
            usage: Usage::Server,
            validity: Duration::days(365),
            backdate: Duration::hours(1),
        }
    }
}

/// Writes a file readable only by its owner (keys).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {path:?}"))?;
    std::io::Write::write_all(&mut f, contents.as_bytes())?;
    Ok(())
}

/// A fresh key for signing service-account tokens (ECDSA P-256): (private PKCS#8 PEM, public PEM).
pub fn service_account_key() -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}
