//! `net://HOST[:CTRL[:DATA]]`, the relayd address a session streams to.

use std::fmt;

/// lttng-relayd's default control port.
pub const DEFAULT_CONTROL_PORT: u16 = 5342;

/// Where a session's relayd listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelaydUrl {
    /// Host name or address.
    pub host: String,
    /// Control port (default 5342).
    pub control_port: u16,
    /// Data port (default: the control port plus one, 5343).
    pub data_port: u16,
}

/// A URL `--set-url` or `url =` cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `net://` (or `tcp://`).
    #[error("URL {0:?}: expected net://HOST[:CONTROL_PORT[:DATA_PORT]]")]
    Scheme(String),
    /// No host after the scheme.
    #[error("URL {0:?} names no host")]
    NoHost(String),
    /// A port that is not a number from 1 to 65535.
    #[error("URL {url:?}: port {port:?} is not a number from 1 to 65535")]
    Port {
        /// The URL.
        url: String,
        /// The bad port text.
        port: String,
    },
}

impl std::str::FromStr for RelaydUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<RelaydUrl, UrlError> {
        let rest = url
            .strip_prefix("net://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| UrlError::Scheme(url.to_owned()))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut parts = rest.split(':');
        let host = parts.next().unwrap_or_default().to_owned();
        if host.is_empty() || host.contains('/') {
            return Err(UrlError::NoHost(url.to_owned()));
        }
        let port = |text: Option<&str>| -> Result<Option<u16>, UrlError> {
            text.map(|t| {
                t.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| UrlError::Port {
                        url: url.to_owned(),
                        port: t.to_owned(),
                    })
            })
            .transpose()
        };
        let control_port = port(parts.next())?.unwrap_or(DEFAULT_CONTROL_PORT);
        let data_port = port(parts.next())?.unwrap_or(control_port.wrapping_add(1).max(1));
        if let Some(extra) = parts.next() {
            return Err(UrlError::Port {
                url: url.to_owned(),
                port: extra.to_owned(),
            });
        }
        Ok(RelaydUrl {
            host,
            control_port,
            data_port,
        })
    }
}

impl fmt::Display for RelaydUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "net://{}:{}:{}",
            self.host, self.control_port, self.data_port
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_default_like_lttng() {
        let u: RelaydUrl = "net://relay.example".parse().unwrap();
        assert_eq!((u.control_port, u.data_port), (5342, 5343));
        let u: RelaydUrl = "net://127.0.0.1:6000".parse().unwrap();
        assert_eq!((u.control_port, u.data_port), (6000, 6001));
        let u: RelaydUrl = "net://h:6000:7000".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.control_port, u.data_port),
            ("h", 6000, 7000)
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!(matches!(
            "file:///tmp".parse::<RelaydUrl>(),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            "net://".parse::<RelaydUrl>(),
            Err(UrlError::NoHost(_))
        ));
        assert!(matches!(
            "net://h:0".parse::<RelaydUrl>(),
            Err(UrlError::Port { .. })
        ));
        assert!(matches!(
            "net://h:1:x".parse::<RelaydUrl>(),
            Err(UrlError::Port { .. })
        ));
        assert!(matches!(
            "net://h:1:2:3".parse::<RelaydUrl>(),
            Err(UrlError::Port { .. })
        ));
    }
}
