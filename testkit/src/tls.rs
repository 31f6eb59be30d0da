//! Certificates made on the spot for TLS tests (rcgen, ring): no file is kept in the repository and no
//! `openssl` command is needed.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};

/// A certificate authority, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
pub struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// Makes the files in a new temporary directory (removed on drop).
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("sb-redis-tls-{:08x}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: a leaf named like its issuer looks self-signed to OpenSSL.
        ca_params.distinguished_name = named("switchboard test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        std::fs::write(dir.join("ca.crt"), ca.pem()).expect("write");
        // An authority the server's certificate does not chain to.
        let other_key = KeyPair::generate().expect("key");
        let mut other = CertificateParams::new(Vec::<String>::new()).expect("params");
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        other.distinguished_name = named("another CA");
        let other = other.self_signed(&other_key).expect("other ca");
        std::fs::write(dir.join("other-ca.crt"), other.pem()).expect("write");
        let pki = Self { dir, ca, ca_key };
        pki.issue("server", &["127.0.0.1", "localhost"]);
        pki.issue("client", &["switchboard-client"]);
        pki
    }

    /// Issues `<name>.crt` and `<name>.key`, a certificate of this authority for `names` (host names or IP
    /// addresses); returns the directory holding them.
    pub fn issue(&self, name: &str, names: &[&str]) -> PathBuf {
        let key = KeyPair::generate().expect("key");
        let sans = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name = named(name);
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        let dir = &self.dir;
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
        dir.clone()
    }

    /// The file `name`: `ca.crt`, `server.crt`/`.key` (127.0.0.1, localhost), `client.crt`/`.key`,
    /// `other-ca.crt` (an authority nothing here chains to).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    /// A `redis-server` with its usual plain port (for the harness) and a TLS port serving this
    /// authority's server certificate; `client_certificates` makes it require one from clients. Returns
    /// the server and its TLS port.
    pub async fn redis_server(
        &self,
        client_certificates: bool,
    ) -> std::io::Result<(crate::RedisServer, u16)> {
        let port = crate::free_port()?;
        let p = |n: &str| self.path(n).display().to_string();
        let server = crate::RedisServer::builder()
            .arg("--tls-port")
            .arg(port.to_string())
            .arg("--tls-cert-file")
            .arg(p("server.crt"))
            .arg("--tls-key-file")
            .arg(p("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(p("ca.crt"))
            .arg("--tls-auth-clients")
            .arg(if client_certificates { "yes" } else { "no" })
            .start()
            .await?;
        Ok((server, port))
    }
}
