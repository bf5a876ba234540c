//! Connecting to NATS: the server URL (`--nats`, `PERSTACK_NATS_URL`) and the credentials a
//! server may ask for: user and password, a token, a credentials file (JWT and NKey seed), TLS
//! with a CA and a client certificate.
//!
//! Secrets (the password, the token) are [`Secret`]s: their `Debug` and `Display` print
//! `<redacted>`, so they never reach an event, a log line or a panic message. This module
//! never logs the URL's user info either: [`NatsOptions::server_for_logs`] strips it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;

/// How to reach the NATS server (command-line options; also built by embedding apps). Its
/// `Debug` shows the server without user info and no secret.
#[derive(Clone, Default, Args)]
pub struct NatsOptions {
    /// NATS server URL, such as nats://127.0.0.1:4222 (runs the job on the cluster).
    #[arg(long = "nats", env = "PERSTACK_NATS_URL", value_name = "url")]
    pub url: Option<String>,
    /// NATS user name (with --nats-password).
    #[arg(long = "nats-user", env = "PERSTACK_NATS_USER", value_name = "user")]
    pub user: Option<String>,
    /// NATS password.
    #[arg(
        long = "nats-password",
        env = "PERSTACK_NATS_PASSWORD",
        hide_env_values = true,
        value_name = "password"
    )]
    pub password: Option<Secret>,
    /// NATS authentication token.
    #[arg(
        long = "nats-token",
        env = "PERSTACK_NATS_TOKEN",
        hide_env_values = true,
        value_name = "token"
    )]
    pub token: Option<Secret>,
    /// NATS credentials file (JWT and NKey seed), as `nsc` writes it.
    #[arg(long = "nats-creds", env = "PERSTACK_NATS_CREDS", value_name = "file")]
    pub creds: Option<PathBuf>,
    /// Require TLS.
    #[arg(long = "nats-tls")]
    pub tls: bool,
    /// A CA certificate (PEM) to trust for the server's TLS certificate (implies --nats-tls).
    #[arg(long = "nats-tls-ca", value_name = "file")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS (with --nats-tls-key).
    #[arg(long = "nats-tls-cert", value_name = "file", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long = "nats-tls-key", value_name = "file", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsOptions")
            .field("server", &self.server_for_logs())
            .field("user", &self.user)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("creds", &self.creds)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// A secret string: printed as `<redacted>` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Why the connection could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No URL was given.
    #[error("no NATS server: pass --nats <url> or set PERSTACK_NATS_URL")]
    NoUrl,
    /// The credentials file could not be read.
    #[error("cannot read the NATS credentials file {}: {source}", path.display())]
    Creds {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server refused or could not be reached.
    #[error("cannot connect to NATS at {server}: {source}")]
    Connect {
        /// The server, without user info.
        server: String,
        /// The client's error.
        source: async_nats::ConnectError,
    },
}

impl NatsOptions {
    /// Options for `url` and nothing else.
    pub fn url(url: impl Into<String>) -> Self {
        NatsOptions {
            url: Some(url.into()),
            ..Default::default()
        }
    }

    /// Whether a server was named (the CLI then runs on the cluster).
    pub fn is_set(&self) -> bool {
        self.url.as_deref().is_some_and(|u| !u.is_empty())
    }

    /// The server URL without any `user:password@` part, for messages.
    pub fn server_for_logs(&self) -> String {
        let url = self.url.clone().unwrap_or_default();
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}{}", &url[..scheme + 3], &url[at + 1..])
            }
            (None, Some(at)) => url[at + 1..].to_owned(),
            _ => url,
        }
    }

    /// Connect, naming the connection `name` (shown by the server's monitoring). The client
    /// reconnects on its own after a lost connection (without limit), re-sending what was
    /// buffered.
    pub(crate) async fn connect(&self, name: &str) -> Result<async_nats::Client, ConnectError> {
        let url = self
            .url
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or(ConnectError::NoUrl)?;
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .max_reconnects(None);
        if let Some(path) = &self.creds {
            options =
                options
                    .credentials_file(path)
                    .await
                    .map_err(|source| ConnectError::Creds {
                        path: path.clone(),
                        source,
                    })?;
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(token) = &self.token {
            options = options.token(token.expose().to_owned());
        }
        if self.tls || self.tls_ca.is_some() || self.tls_cert.is_some() {
            options = options.require_tls(true);
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options
            .connect(url)
            .await
            .map_err(|source| ConnectError::Connect {
                server: self.server_for_logs(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_url_passwords_never_print() {
        let mut o = NatsOptions::url("nats://alice:hunter2@127.0.0.1:4222");
        o.password = Some(Secret::new("hunter2"));
        o.token = Some(Secret::new("tok-123"));
        let shown = format!("{o:?} {}", o.server_for_logs());
        assert!(
            !shown.contains("tok-123") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert_eq!(o.server_for_logs(), "nats://127.0.0.1:4222");
        assert!(format!("{:?}", o.password).contains("<redacted>"));
    }
}
