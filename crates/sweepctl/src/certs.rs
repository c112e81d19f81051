//! `sweepctl certs`: a private certificate authority and a server certificate
//! for the coordinator, so that TLS is one command away on a cluster that has
//! no PKI. The CA signs the server certificate; clients trust the CA
//! (`--tls-ca ca.pem`), the coordinator serves the server pair
//! (`--tls-cert server.pem --tls-key server.key`). Keeping the CA separate
//! from the server key means a new server certificate (another host name)
//! needs no change on the clients.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{Datelike, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// How long the CA is valid: long enough that a small team forgets about it,
/// short enough that a leaked key does not last forever.
const CA_VALID_DAYS: i64 = 5 * 365;

/// How long the server certificate is valid: 825 days is the most that
/// browsers and macOS accept, a sensible ceiling for any TLS client.
const SERVER_VALID_DAYS: i64 = 825;

#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Host name or IP address that clients use to reach the coordinator
    /// (repeat for several; `localhost` and 127.0.0.1 are always added).
    #[arg(long = "host", required = true, value_name = "NAME_OR_IP")]
    pub hosts: Vec<String>,
    /// Directory to write ca.pem, ca.key, server.pem and server.key into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite existing files (by default an existing CA is never replaced,
    /// since that would break every client that trusts it).
    #[arg(long)]
    pub force: bool,
}

/// The files written, for the caller to print.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Runs `sweepctl certs`: writes the files and says how to use them.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let files = generate(&args.hosts, &args.out, args.force)?;
    println!(
        "wrote {}, {}, {}, {}",
        files.ca_cert.display(),
        files.ca_key.display(),
        files.server_cert.display(),
        files.server_key.display()
    );
    println!(
        "coordinator: sweep-coordinator --tls-cert {} --tls-key {} ...",
        files.server_cert.display(),
        files.server_key.display()
    );
    println!(
        "workers, sweepctl: --tls-ca {} (keep ca.key offline)",
        files.ca_cert.display()
    );
    Ok(())
}

/// Creates a CA and a server certificate for `hosts` in `out`.
pub fn generate(hosts: &[String], out: &Path, force: bool) -> anyhow::Result<CertFiles> {
    let names = subject_alt_names(hosts)?;
    let files = CertFiles {
        ca_cert: out.join("ca.pem"),
        ca_key: out.join("ca.key"),
        server_cert: out.join("server.pem"),
        server_key: out.join("server.key"),
    };
    if !force {
        for path in [
            &files.ca_cert,
            &files.ca_key,
            &files.server_cert,
            &files.server_key,
        ] {
            if path.exists() {
                bail!(
                    "{} exists; pass --force to replace it (clients trusting the old CA then need the new ca.pem)",
                    path.display()
                );
            }
        }
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let now = Utc::now();
    let date = |days: i64| {
        let day = now + Duration::days(days);
        // Months and days from chrono are always in range for rcgen.
        rcgen::date_time_ymd(day.year(), day.month() as u8, day.day() as u8)
    };

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "sweep runner CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = date(-1);
    ca.not_after = date(CA_VALID_DAYS);
    let ca_cert = ca
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().context("generating the server key")?;
    let mut server = CertificateParams::new(names).context("server certificate parameters")?;
    server
        .distinguished_name
        .push(DnType::CommonName, hosts[0].clone());
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = date(-1);
    server.not_after = date(SERVER_VALID_DAYS);
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .context("signing the server certificate")?;

    write_file(&files.ca_cert, ca_cert.pem().as_bytes(), false)?;
    write_file(&files.ca_key, issuer.key().serialize_pem().as_bytes(), true)?;
    write_file(&files.server_cert, server_cert.pem().as_bytes(), false)?;
    write_file(
        &files.server_key,
        server_key.serialize_pem().as_bytes(),
        true,
    )?;
    Ok(files)
}

/// The names the certificate is valid for: those given, plus `localhost` and
/// 127.0.0.1 so that the same files serve local tests. Each must be a DNS
/// name or an IP address; rcgen tells them apart.
fn subject_alt_names(hosts: &[String]) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for host in hosts {
        let host = host.trim();
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'*'));
        if !valid {
            bail!("--host {host:?}: expected a DNS name or an IP address");
        }
        names.push(host.to_ascii_lowercase());
    }
    if names.is_empty() {
        bail!("give at least one --host");
    }
    for default in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|name| name == default) {
            names.push(default.to_string());
        }
    }
    Ok(names)
}

/// Writes `contents`; private keys get mode 0600 from the start, so they are
/// never readable by others, not even for an instant.
fn write_file(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_ca_and_a_server_pair() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(
            &["coord.example.org".into(), "10.0.0.5".into()],
            dir.path(),
            false,
        )
        .unwrap();
        for path in [&files.ca_cert, &files.server_cert] {
            let text = fs::read_to_string(path).unwrap();
            assert!(
                text.starts_with("-----BEGIN CERTIFICATE-----"),
                "{}",
                path.display()
            );
        }
        for path in [&files.ca_key, &files.server_key] {
            let text = fs::read_to_string(path).unwrap();
            assert!(
                text.starts_with("-----BEGIN PRIVATE KEY-----"),
                "{}",
                path.display()
            );
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", path.display());
            }
        }
        // That clients accept the server certificate through the CA is
        // shown end to end by the coordinator's TLS test.
    }

    #[test]
    fn refuses_to_replace_a_ca_without_force() {
        let dir = tempfile::tempdir().unwrap();
        generate(&["a".into()], dir.path(), false).unwrap();
        let err = generate(&["a".into()], dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        generate(&["a".into()], dir.path(), true).unwrap();
    }

    #[test]
    fn rejects_names_that_are_neither_hosts_nor_addresses() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "a b", "x/y", "host\0", "é.example"] {
            assert!(
                generate(&[bad.into()], dir.path(), false).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn always_covers_localhost() {
        let names = subject_alt_names(&["Coord".into()]).unwrap();
        assert_eq!(names, ["coord", "localhost", "127.0.0.1"]);
        let names = subject_alt_names(&["127.0.0.1".into(), "localhost".into()]).unwrap();
        assert_eq!(names, ["127.0.0.1", "localhost"]);
    }
}
