//! Where the API server is: `--server`, else `WEIR_SERVER`, else the config
//! file (`$WEIR_CONFIG` or `~/.weir/config.yaml`, written by `cargo xtask up`),
//! else the default local address. Resolution is pure; `main` reads the
//! environment and the file once and passes them in.

use serde::Deserialize;

/// The address `weir-control --listen` uses by default.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:6443";

/// `~/.weir/config.yaml`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub server: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "invalid config file {path}: {message} (expected a YAML mapping like `server: http://127.0.0.1:6443`)"
    )]
    Invalid { path: String, message: String },
    #[error("invalid server address {addr:?}: use http://HOST:PORT or unix:///path/to/socket")]
    BadAddress { addr: String },
}

/// Picks the server address. `config` is (path, contents) of the config file if one was found.
pub fn resolve_server(
    flag: Option<&str>,
    env: Option<&str>,
    config: Option<(&str, &str)>,
) -> Result<String, ConfigError> {
    let addr = if let Some(a) = flag.filter(|a| !a.is_empty()) {
        a.to_string()
    } else if let Some(a) = env.filter(|a| !a.is_empty()) {
        a.to_string()
    } else if let Some((path, text)) = config {
        let cfg: ConfigFile = serde_yaml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        cfg.server
    } else {
        DEFAULT_SERVER.to_string()
    };
    // A bare host:port is what people type; accept it as http.
    let addr = if addr.contains("://") {
        addr
    } else {
        format!("http://{addr}")
    };
    if addr.starts_with("http://") || addr.starts_with("https://") || addr.starts_with("unix://") {
        Ok(addr)
    } else {
        Err(ConfigError::BadAddress { addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_table() {
        let file = Some(("/c.yaml", "server: http://10.0.0.1:1\n"));
        // (flag, env, file, expected)
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<(&'a str, &'a str)>,
            Result<&'a str, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                Some("http://f:1"),
                Some("http://e:1"),
                file,
                Ok("http://f:1"),
            ),
            (None, Some("http://e:1"), file, Ok("http://e:1")),
            (None, Some(""), file, Ok("http://10.0.0.1:1")),
            (None, None, None, Ok(DEFAULT_SERVER)),
            (
                Some("127.0.0.1:7000"),
                None,
                None,
                Ok("http://127.0.0.1:7000"),
            ),
            (
                Some("unix:///run/weir.sock"),
                None,
                None,
                Ok("unix:///run/weir.sock"),
            ),
            (
                None,
                None,
                Some(("/c.yaml", "servr: x\n")),
                Err("invalid config file /c.yaml"),
            ),
            (Some("ftp://x"), None, None, Err("invalid server address")),
        ];
        for (flag, env, file, want) in cases {
            let got = resolve_server(flag, env, file);
            match want {
                Ok(a) => assert_eq!(got.as_deref(), Ok(a)),
                Err(frag) => assert!(got.expect_err(frag).to_string().contains(frag)),
            }
        }
    }
}
