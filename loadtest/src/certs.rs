//! A throwaway certificate authority and server certificate for `--tls` runs, made with the
//! `openssl` command-line tool in a temporary directory (removed when the [`Certs`] drop):
//! P-256 keys, the server certificate valid for `IP:127.0.0.1` and `DNS:localhost`, two days.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Context, Error, Result};
use crate::target::{temp_dir, TempDir};

/// The files of one run's certificates.
pub struct Certs {
    _dir: TempDir,
    /// The CA certificate (PEM text) clients verify the server with.
    pub ca_pem: String,
    /// The server certificate file (PEM).
    pub cert: PathBuf,
    /// The server key file (PKCS#8 PEM).
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running openssl (is it installed?)")?;
    if !out.status.success() {
        return Err(Error::Server(format!(
            "openssl {} failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Makes a CA and a server certificate signed by it.
pub fn generate() -> Result<Certs> {
    let dir = temp_dir("tls")?;
    let d = dir.0.as_path();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]);
    ca.extend(["-subj", "/CN=rotor-loadtest-ca", "-addext", "basicConstraints=critical,CA:TRUE"]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(d, &ca)?;
    let mut csr = vec!["req", "-new"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    openssl(d, &csr)?;
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .context("writing ext.cnf")?;
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    )?;
    let ca_pem = std::fs::read_to_string(d.join("ca.pem")).context("reading ca.pem")?;
    let (cert, key) = (d.join("server.pem"), d.join("server.key"));
    Ok(Certs { _dir: dir, ca_pem, cert, key })
}
