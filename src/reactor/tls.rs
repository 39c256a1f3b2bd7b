//! Mutual TLS, set up once per node: the rustls configurations for both
//! sides of a connection, loaded from the three PEM files of
//! [`TlsFiles`]. rustls is sans-IO like our codec (`read_tls`,
//! `process_new_packets`, `write_tls`): the reactor moves its bytes, as it
//! does the core's (see `socket`).
//!
//! Both sides present a certificate signed by the CA. The acceptor
//! requires and verifies the dialler's (`WebPkiClientVerifier`); the
//! dialler verifies the acceptor's against the host it dialled (the
//! `HOST` of `--peer HOST:PORT`, a DNS name or an IP literal).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use rustls::{ServerConnection, DEFAULT_VERSIONS};

use crate::node::{key, TlsFiles};

/// Both sides' rustls configurations, shared by every connection.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads the certificate, key and CA files. Every error names the
    /// file it is about (`InvalidInput`; `NotFound` and friends keep the
    /// kind of the failed read).
    pub fn load(files: &TlsFiles) -> io::Result<TlsConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = read_certs(&files.cert, "certificate")?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| pem_error(&files.key, "private key", e))?;
        // Checked once the file is known to hold a key: a certificate
        // named by mistake is better told as such.
        let meta = std::fs::metadata(&files.key)
            .map_err(|e| pem_error(&files.key, "private key", pem::Error::Io(e)))?;
        key::refuse_shared(
            &meta,
            "TLS private key",
            &files.key,
            "whoever reads it can pose as this node",
        )
        .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&files.ca, "CA certificate")? {
            roots
                .add(ca)
                .map_err(|e| invalid(&files.ca, format!("not a usable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let pair_error = |e: rustls::Error| {
            let (cert, key) = (files.cert.display(), files.key.display());
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TLS certificate {cert} with key {key}: {e}"),
            )
        };

        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| invalid(&files.ca, format!("cannot verify peers with it: {e}")))?;
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(DEFAULT_VERSIONS)
            .map_err(|e| io::Error::other(format!("TLS versions: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(pair_error)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(DEFAULT_VERSIONS)
            .map_err(|e| io::Error::other(format!("TLS versions: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(pair_error)?;
        Ok(TlsConfig {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The server side of a TLS session, for an accepted socket.
    pub fn accept(&self) -> Result<Connection, String> {
        ServerConnection::new(Arc::clone(&self.server))
            .map(Connection::Server)
            .map_err(|e| e.to_string())
    }

    /// The client side of a TLS session, for a socket dialled to `spec`
    /// (`HOST:PORT`): the peer's certificate must name `HOST`.
    pub fn dial(&self, spec: &str) -> Result<Connection, String> {
        let host = spec.rsplit_once(':').map_or(spec, |(host, _)| host);
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("`{host}` is not a TLS server name: {e}"))?;
        ClientConnection::new(Arc::clone(&self.client), name)
            .map(Connection::Client)
            .map_err(|e| e.to_string())
    }
}

/// Every certificate in the PEM file at `path`; at least one.
fn read_certs(path: &Path, what: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(path, what, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, what, pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// A PEM read error, naming the file and what was looked for in it.
fn pem_error(path: &Path, what: &str, e: pem::Error) -> io::Error {
    let file = path.display();
    match e {
        pem::Error::Io(e) => {
            io::Error::new(e.kind(), format!("cannot read TLS {what} {file}: {e}"))
        }
        pem::Error::NoItemsFound => invalid(path, format!("no PEM {what} in it")),
        e => invalid(path, format!("not a valid PEM {what}: {e}")),
    }
}

fn invalid(path: &Path, why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("TLS file {}: {why}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    /// A temp dir, removed (keys and all) on drop.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fresh temp dir holding `ca.pem`, and `node.pem`/`node.key`
    /// (SAN 127.0.0.1 and localhost) signed by that CA, and `other.key`,
    /// a key of no certificate.
    fn pki(tag: &str) -> (TempDir, TlsFiles) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("avm-tls-unit-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let node = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = node.signed_by(&key, &ca).unwrap();
        let files = TlsFiles {
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
            ca: dir.join("ca.pem"),
        };
        std::fs::write(&files.ca, ca.pem()).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        write_private(&files.key, &key.serialize_pem());
        let other = KeyPair::generate().unwrap();
        write_private(&dir.join("other.key"), &other.serialize_pem());
        (TempDir(dir), files)
    }

    /// Writes a key file as a careful user would: mode 0600.
    fn write_private(path: &std::path::Path, pem: &str) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .unwrap();
        file.write_all(pem.as_bytes()).unwrap();
    }

    fn load_err(files: &TlsFiles) -> io::Error {
        TlsConfig::load(files).expect_err("a bad file loaded")
    }

    /// Moves `from`'s waiting records to `to`: whether there were any.
    fn carry(from: &mut Connection, to: &mut Connection) -> Result<bool, rustls::Error> {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut rest = &wire[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets()?;
        }
        Ok(!wire.is_empty())
    }

    /// Moves records between the two sides until neither has any to send.
    fn pump(client: &mut Connection, server: &mut Connection) -> Result<(), rustls::Error> {
        while carry(client, server)? | carry(server, client)? {}
        Ok(())
    }

    #[test]
    fn load_reads_the_three_files() {
        let (_dir, files) = pki("ok");
        TlsConfig::load(&files).unwrap();
    }

    #[test]
    fn load_names_a_missing_file() {
        let (dir, mut files) = pki("missing");
        files.ca = dir.0.join("absent.pem");
        let e = load_err(&files);
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let text = e.to_string();
        assert!(text.contains("TLS CA certificate"), "{text}");
        assert!(text.contains(&files.ca.display().to_string()), "{text}");
    }

    #[test]
    fn load_names_a_file_without_what_it_should_hold() {
        let (dir, files) = pki("wrong");
        let garbage = dir.0.join("garbage.pem");
        std::fs::write(&garbage, "not PEM\n").unwrap();
        let cases = [
            (
                TlsFiles {
                    cert: garbage.clone(),
                    ..files.clone()
                },
                &garbage,
                "no PEM certificate",
            ),
            (
                TlsFiles {
                    key: files.cert.clone(),
                    ..files.clone()
                },
                &files.cert,
                "no PEM private key",
            ),
            (
                TlsFiles {
                    ca: files.key.clone(),
                    ..files.clone()
                },
                &files.key,
                "no PEM CA certificate",
            ),
        ];
        for (files, named, what) in &cases {
            let e = load_err(files);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            let text = e.to_string();
            assert!(text.contains(&named.display().to_string()), "{text}");
            assert!(text.contains(what), "{text}");
        }
    }

    #[test]
    fn load_refuses_a_private_key_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, files) = pki("mode");
        for mode in [0o644, 0o640, 0o604, 0o620] {
            let perms = std::fs::Permissions::from_mode(mode);
            std::fs::set_permissions(&files.key, perms).unwrap();
            let e = load_err(&files);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "mode {mode:o}");
            let text = e.to_string();
            let shown = files.key.display().to_string();
            assert!(text.contains(&format!("TLS private key {shown}")), "{text}");
            assert!(text.contains(&format!("(mode 0{mode:o})")), "{text}");
            assert!(text.contains(&format!("chmod 600 {shown}")), "{text}");
        }
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o400)).unwrap();
        TlsConfig::load(&files).expect("a key only its owner reads");
    }

    #[test]
    fn load_names_a_key_that_does_not_match_the_certificate() {
        let (dir, mut files) = pki("pair");
        files.key = dir.0.join("other.key");
        let text = load_err(&files).to_string();
        assert!(text.contains(&files.cert.display().to_string()), "{text}");
        assert!(text.contains(&files.key.display().to_string()), "{text}");
    }

    #[test]
    fn dial_takes_the_host_of_host_port() {
        let (_dir, files) = pki("names");
        let tls = TlsConfig::load(&files).unwrap();
        for spec in [
            "127.0.0.1:9001",
            "localhost:9001",
            "[::1]:9001",
            "a.example:1",
        ] {
            tls.dial(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        }
        let e = tls.dial("not a name:9001").unwrap_err();
        assert!(e.contains("`not a name` is not a TLS server name"), "{e}");
    }

    #[test]
    fn handshake_in_memory_checks_the_dialled_name() {
        let (_dir, files) = pki("handshake");
        let tls = TlsConfig::load(&files).unwrap();
        for host in ["127.0.0.1", "localhost"] {
            let mut client = tls.dial(&format!("{host}:9001")).unwrap();
            let mut server = tls.accept().unwrap();
            pump(&mut client, &mut server).unwrap_or_else(|e| panic!("{host}: {e}"));
            assert!(
                !client.is_handshaking() && !server.is_handshaking(),
                "{host}"
            );
            assert!(server.peer_certificates().is_some_and(|c| !c.is_empty()));
        }
        let mut client = tls.dial("other.example:9001").unwrap();
        let mut server = tls.accept().unwrap();
        let e = pump(&mut client, &mut server).unwrap_err();
        assert!(e.to_string().contains("certificate"), "{e}");
    }
}
