//! TLS for the three frontends, and `freshet gen-cert`.
//!
//! One certificate and key (from `[tls]` or the `--tls-*` flags) serve pgwire, Flight and
//! HTTP, through rustls on the ring provider. Each frontend gets its own rustls configuration
//! only because each announces a different ALPN protocol: `postgresql` (libpq 17 sends it, and
//! PostgreSQL's direct TLS negotiation requires it), `h2` (gRPC clients refuse a TLS
//! connection that did not select it) and `http/1.1`.
//!
//! pgwire negotiates TLS the PostgreSQL way (SSLRequest, answered by pgwire's
//! `process_socket`). HTTP and Flight have no such request: a connection whose first byte
//! starts a TLS handshake record is a TLS connection, anything else is clear text, which is
//! served when TLS is optional and refused when `require` is set. Handshakes run on tasks of
//! their own ([`incoming`]), so a slow or silent client holds up nobody else.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::config::TlsSettings;

/// The first byte of a TLS record carrying a handshake message (a ClientHello here).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Handshakes (HTTP and Flight) under way at once; connections beyond are closed at once
/// rather than queued, like refusals over the connection limit.
const HANDSHAKES_AT_ONCE_MAX: usize = 128;

/// Connections handed over from the accepting task and not yet taken by the server.
const READY_QUEUE: usize = 16;

/// The loaded certificate, a rustls configuration per frontend, and the policy.
pub struct ServerTls {
    pg: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
    flight: Arc<ServerConfig>,
    require: bool,
    handshake_timeout: Duration,
}

impl ServerTls {
    /// Reads and checks the certificate and key; every problem is an error naming the file.
    /// `handshake_timeout` bounds an HTTP or Flight client's TLS handshake (pgwire's is part of
    /// its start-up, bounded by `authentication_timeout` in pgwire).
    pub fn load(settings: &TlsSettings, handshake_timeout: Duration) -> Result<Self> {
        let certs = read_certificates(&settings.cert_file)?;
        let key = read_key(&settings.key_file)?;
        let config = |alpn: &[u8]| -> Result<Arc<ServerConfig>> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .context("TLS: the ring provider supports no safe protocol version")?
                .with_no_client_auth()
                .with_single_cert(certs.clone(), key.clone_key())
                .with_context(|| {
                    format!(
                        "TLS: the key in {} cannot be used with the certificate in {}",
                        settings.key_file.display(),
                        settings.cert_file.display()
                    )
                })?;
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(config))
        };
        Ok(Self {
            pg: config(b"postgresql")?,
            http: config(b"http/1.1")?,
            flight: config(b"h2")?,
            require: settings.require,
            handshake_timeout,
        })
    }

    /// Whether clear-text connections are refused.
    pub fn required(&self) -> bool {
        self.require
    }

    /// The acceptor pgwire negotiates with after an SSLRequest.
    pub fn pg_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.pg.clone())
    }

    /// How HTTP connections start.
    pub fn http(&self) -> Arc<Handshake> {
        Arc::new(Handshake {
            acceptor: tokio_rustls::TlsAcceptor::from(self.http.clone()),
            require: self.require,
            timeout: self.handshake_timeout,
            plain_refusal: Some(http_plain_refusal()),
            frontend: "http",
        })
    }

    /// How Flight connections start. A clear-text gRPC client refused gets no answer it
    /// could read (it expects HTTP/2 frames), so the connection is just closed.
    pub fn flight(&self) -> Arc<Handshake> {
        Arc::new(Handshake {
            acceptor: tokio_rustls::TlsAcceptor::from(self.flight.clone()),
            require: self.require,
            timeout: self.handshake_timeout,
            plain_refusal: None,
            frontend: "flight",
        })
    }
}

/// What a plain HTTP request gets when TLS is required: the JSON error shape of the HTTP API.
fn http_plain_refusal() -> Vec<u8> {
    let body = "{\"error\":\"this server accepts only TLS connections: use https://\",\"code\":\"tls_required\"}\n";
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read(path)
        .with_context(|| format!("could not read TLS certificate file {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "TLS certificate file {} is not valid PEM: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        bail!(
            "TLS certificate file {} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let text = std::fs::read(path)
        .with_context(|| format!("could not read TLS key file {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => anyhow::anyhow!(
            "TLS key file {} holds no private key (expected PEM: -----BEGIN PRIVATE KEY-----, \
             RSA PRIVATE KEY or EC PRIVATE KEY; an ENCRYPTED PRIVATE KEY must be decrypted \
             first, e.g. with `openssl pkey`)",
            path.display()
        ),
        other => anyhow::anyhow!("TLS key file {} is not valid PEM: {other}", path.display()),
    })
}

/// How one frontend (HTTP or Flight) starts its connections.
pub struct Handshake {
    acceptor: tokio_rustls::TlsAcceptor,
    require: bool,
    timeout: Duration,
    /// Written to a refused clear-text client before closing.
    plain_refusal: Option<Vec<u8>>,
    frontend: &'static str,
}

impl Handshake {
    /// TLS when the client starts a handshake, clear text when it does not and TLS is
    /// optional; `None` when the connection is refused or fails before it is usable.
    async fn start(&self, mut socket: TcpStream, peer: SocketAddr) -> Option<Stream> {
        let started = tokio::time::timeout(self.timeout, async {
            let mut first = [0u8; 1];
            // Peeking leaves the byte for rustls (or the HTTP/2 server) to read.
            if socket.peek(&mut first).await? == 0 {
                return Ok(None);
            }
            if first[0] == TLS_HANDSHAKE_RECORD {
                let tls = self.acceptor.accept(socket).await?;
                return Ok(Some(Stream::Tls(Box::new(tls))));
            }
            if !self.require {
                return Ok(Some(Stream::Plain(socket)));
            }
            tracing::info!(%peer, frontend = self.frontend, "clear-text connection refused: TLS is required");
            if let Some(refusal) = &self.plain_refusal {
                let _ = socket.write_all(refusal).await;
            }
            let _ = socket.shutdown().await;
            Ok::<_, io::Error>(None)
        })
        .await;
        match started {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::debug!(%peer, frontend = self.frontend, error = %err, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, frontend = self.frontend, "TLS handshake timed out");
                None
            }
        }
    }
}

/// A connection, encrypted or not.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A connection ready to serve, with what `admit` attached to it.
pub struct Accepted<T> {
    pub stream: Stream,
    pub peer: SocketAddr,
    pub admitted: T,
}

/// Accepts connections on `listener` and hands them over started (TLS handshake done, when
/// `handshake` is given), several handshakes at once. `admit` runs first on every accepted
/// connection and may refuse it (`None`: closed at once), e.g. over a connection limit; what
/// it returns travels with the connection. The accepting task ends when the receiver is
/// dropped.
pub fn incoming<T, F>(
    listener: TcpListener,
    handshake: Option<Arc<Handshake>>,
    admit: F,
) -> mpsc::Receiver<Accepted<T>>
where
    T: Send + 'static,
    F: Fn(SocketAddr) -> Option<T> + Send + 'static,
{
    let (ready, receiver) = mpsc::channel(READY_QUEUE);
    tokio::spawn(async move {
        let handshakes_at_once = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE_MAX));
        // Owned here, so the handshakes under way end with the accepting task.
        let mut handshakes = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                _ = ready.closed() => return,
                accepted = listener.accept() => accepted,
            };
            while handshakes.try_join_next().is_some() {}
            let (socket, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, typically: give closing connections a moment.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let Some(admitted) = admit(peer) else {
                continue;
            };
            let Some(handshake) = handshake.clone() else {
                let started = Accepted {
                    stream: Stream::Plain(socket),
                    peer,
                    admitted,
                };
                if ready.send(started).await.is_err() {
                    return;
                }
                continue;
            };
            let Ok(slot) = handshakes_at_once.clone().try_acquire_owned() else {
                tracing::warn!(%peer, frontend = handshake.frontend, "connection closed: too many TLS handshakes at once");
                continue;
            };
            let ready = ready.clone();
            handshakes.spawn(async move {
                let stream = handshake.start(socket, peer).await;
                drop(slot);
                if let Some(stream) = stream {
                    let _ = ready
                        .send(Accepted {
                            stream,
                            peer,
                            admitted,
                        })
                        .await;
                }
            });
        }
    });
    receiver
}

/// Started connections as an axum listener, for the HTTP server.
pub struct Listener {
    pub incoming: mpsc::Receiver<Accepted<()>>,
    pub local_addr: SocketAddr,
}

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Stream, SocketAddr) {
        match self.incoming.recv().await {
            Some(accepted) => (accepted.stream, accepted.peer),
            // The accepting task is gone (it only ends when this receiver is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// `freshet gen-cert`: a development certificate authority and a server certificate it
/// signs, as PEM files.
#[derive(Debug, Clone, clap::Args)]
pub struct GenCertArgs {
    /// Directory the files are written to: ca.crt, ca.key, server.crt, server.key.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// A host name or IP address clients use to reach the server (repeatable); it goes in the
    /// certificate, where `sslmode=verify-full` and other verifying clients look for it.
    #[arg(long = "host", default_values = ["localhost", "127.0.0.1", "::1"])]
    pub hosts: Vec<String>,
    /// How long the server certificate is valid, in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Overwrite files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// The files `gen-cert` writes.
pub struct GeneratedFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a CA and a server certificate for `args.hosts` signed by it. A CA rather than one
/// self-signed certificate: verifying clients built on rustls or Go refuse a CA certificate as
/// a server's own, and a CA is what clients are given (`sslrootcert`, `tls_root_certs`).
pub fn gen_cert(args: &GenCertArgs) -> Result<GeneratedFiles> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    if args.hosts.is_empty() {
        bail!("gen-cert needs at least one --host");
    }
    if args.days == 0 {
        bail!("--days must be at least 1");
    }
    let files = [
        ("ca.crt", false),
        ("ca.key", true),
        ("server.crt", false),
        ("server.key", true),
    ];
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("could not create {}", args.dir.display()))?;
    if !args.force {
        for (name, _) in files {
            let path = args.dir.join(name);
            if path.exists() {
                bail!("{} already exists (--force overwrites it)", path.display());
            }
        }
    }
    let day = Duration::from_secs(24 * 60 * 60);
    let now = rcgen::date_time_ymd(1970, 1, 1)
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the system clock is before 1970")?;

    let ca_key = KeyPair::generate().context("could not generate the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    // A name of its own, so that two development CAs are never mistaken for each other by a
    // client looking the issuer up by name.
    let tag: u32 = rand::random();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("Freshet development CA {tag:08x}"),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // A little in the past, so a clock slightly behind still accepts the certificates.
    ca.not_before = now - day;
    ca.not_after = now + day * (args.days + 1);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let key = KeyPair::generate().context("could not generate the server key")?;
    let mut server = CertificateParams::new(args.hosts.clone())
        .with_context(|| format!("invalid --host among {:?}", args.hosts))?;
    server
        .distinguished_name
        .push(DnType::CommonName, args.hosts[0].clone());
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = now - day;
    server.not_after = now + day * args.days;
    let cert = server.signed_by(&key, &issuer)?;

    let contents = [
        ca_cert.pem(),
        ca_key.serialize_pem(),
        cert.pem(),
        key.serialize_pem(),
    ];
    for ((name, secret), text) in files.iter().zip(contents) {
        write_file(&args.dir.join(name), text.as_bytes(), *secret)?;
    }
    Ok(GeneratedFiles {
        ca_cert: args.dir.join("ca.crt"),
        cert: args.dir.join("server.crt"),
        key: args.dir.join("server.key"),
    })
}

/// Writes a file; a key is readable by its owner only (as PostgreSQL insists for its own).
fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = secret;
    use std::io::Write;
    options
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .with_context(|| format!("could not write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> TlsSettings {
        TlsSettings {
            cert_file: dir.join("server.crt"),
            key_file: dir.join("server.key"),
            require: false,
        }
    }

    fn generate(dir: &Path) -> GeneratedFiles {
        gen_cert(&GenCertArgs {
            dir: dir.to_path_buf(),
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            days: 30,
            force: false,
        })
        .unwrap()
    }

    #[test]
    fn generated_files_load_and_are_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path());
        ServerTls::load(&settings(dir.path()), Duration::from_secs(1)).unwrap();
        let again = gen_cert(&GenCertArgs {
            dir: dir.path().to_path_buf(),
            hosts: vec!["localhost".into()],
            days: 30,
            force: false,
        });
        let err = format!("{:#}", again.err().unwrap());
        assert!(err.contains("already exists"), "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("server.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        }
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let load = |dir: &Path| {
            ServerTls::load(&settings(dir), Duration::from_secs(1))
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        let err = load(dir.path());
        assert!(
            err.contains("could not read TLS certificate file") && err.contains("server.crt"),
            "{err}"
        );
        generate(dir.path());
        std::fs::write(dir.path().join("server.key"), "not a key\n").unwrap();
        let err = load(dir.path());
        assert!(
            err.contains("holds no private key") && err.contains("server.key"),
            "{err}"
        );
        std::fs::write(dir.path().join("server.crt"), "").unwrap();
        let err = load(dir.path());
        assert!(err.contains("holds no certificate"), "{err}");
        // A key that belongs to another certificate.
        let other = tempfile::tempdir().unwrap();
        generate(other.path());
        generate(dir.path().join("fresh").as_path());
        std::fs::copy(
            other.path().join("server.key"),
            dir.path().join("fresh/server.key"),
        )
        .unwrap();
        let err = load(&dir.path().join("fresh"));
        assert!(err.contains("cannot be used with the certificate"), "{err}");
    }
}
