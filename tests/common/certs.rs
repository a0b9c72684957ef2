//! A throwaway PKI for TLS tests, made with the `openssl` command line (Debian's): a CA, and
//! server or client certificates it signs. Everything lives in one temporary directory,
//! removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Pki {
    pub dir: PathBuf,
    /// The CA certificate (PEM file).
    pub ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rotor-pki-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &format!("/CN=rotor test CA {tag}"),
            ],
        );
        Pki { ca: dir.join("ca.pem"), dir }
    }

    /// A certificate named `name` (its CN) for `san` with extended key usage `usage`;
    /// returns the certificate and key files.
    fn issue(&self, name: &str, san: &str, usage: &str) -> (PathBuf, PathBuf) {
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(&ext, format!("subjectAltName={san}\nextendedKeyUsage={usage}\n")).unwrap();
        let (key, csr, cert) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                ext.to_str().unwrap(),
            ],
        );
        (self.dir.join(cert), self.dir.join(key))
    }

    /// A server certificate for `localhost` and 127.0.0.1 (client use too: a Redis Sentinel
    /// presents its own when it dials the master).
    pub fn server(&self, name: &str) -> (PathBuf, PathBuf) {
        self.issue(name, "DNS:localhost,IP:127.0.0.1", "serverAuth,clientAuth")
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        self.issue(name, &format!("DNS:{name}"), "clientAuth")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
