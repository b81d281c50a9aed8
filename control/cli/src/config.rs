//! Where the API server is and which namespace is the default: `--server`,
//! else `WEIR_SERVER`, else the config file (`$WEIR_CONFIG` or
//! `~/.weir/config.yaml`, written by `cargo xtask up`), else the default local
//! address. The file is kubeconfig-like: a plain `server:` (what xtask
//! writes) and/or named contexts with a `current-context`. Resolution and
//! context edits are pure; `main` reads and writes the file.

use serde::{Deserialize, Serialize};

/// The address `weir-control --listen` uses by default.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:6443";

/// `~/.weir/config.yaml`.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    /// The server when no context is current (the form xtask writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<Context>,
}

/// A named server + default namespace.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "invalid config file {path}: {message} (expected YAML like `server: http://127.0.0.1:6443`, or `current-context:` and `contexts:` entries with name, server, namespace)"
    )]
    Invalid { path: String, message: String },
    #[error("invalid server address {addr:?}: use http://HOST:PORT or unix:///path/to/socket")]
    BadAddress { addr: String },
    #[error("no context exists with the name: {name:?}")]
    NoContext { name: String },
}

/// Parses the config file's text (empty text is an empty config).
pub fn parse(path: &str, text: &str) -> Result<ConfigFile, ConfigError> {
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    serde_yaml::from_str(text).map_err(|e| ConfigError::Invalid {
        path: path.to_string(),
        message: e.to_string(),
    })
}

impl ConfigFile {
    /// The current context, if one is named; naming a missing one is an error.
    pub fn current(&self) -> Result<Option<&Context>, ConfigError> {
        match &self.current_context {
            None => Ok(None),
            Some(n) => self
                .contexts
                .iter()
                .find(|c| &c.name == n)
                .map(Some)
                .ok_or_else(|| ConfigError::NoContext { name: n.clone() }),
        }
    }

    /// `config use-context NAME`.
    pub fn use_context(&mut self, name: &str) -> Result<(), ConfigError> {
        if !self.contexts.iter().any(|c| c.name == name) {
            return Err(ConfigError::NoContext { name: name.into() });
        }
        self.current_context = Some(name.into());
        Ok(())
    }

    /// `config delete-context NAME`.
    pub fn delete_context(&mut self, name: &str) -> Result<(), ConfigError> {
        let before = self.contexts.len();
        self.contexts.retain(|c| c.name != name);
        if self.contexts.len() == before {
            return Err(ConfigError::NoContext { name: name.into() });
        }
        if self.current_context.as_deref() == Some(name) {
            self.current_context = None;
        }
        Ok(())
    }

    /// `config set-context NAME [--server] [--namespace]`: creates the context
    /// or changes only the given fields. Returns whether it was created.
    pub fn set_context(
        &mut self,
        name: &str,
        server: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<bool, ConfigError> {
        if let Some(s) = server {
            check_address(&normalize(s))?;
        }
        let created = !self.contexts.iter().any(|c| c.name == name);
        if created {
            self.contexts.push(Context {
                name: name.into(),
                ..Default::default()
            });
        }
        if let Some(c) = self.contexts.iter_mut().find(|c| c.name == name) {
            if let Some(s) = server {
                c.server = Some(normalize(s));
            }
            if let Some(n) = namespace {
                c.namespace = Some(n.to_string()).filter(|n| !n.is_empty());
            }
        }
        Ok(created)
    }

    /// `config get-contexts`: kubectl's table, `*` marks the current one.
    pub fn contexts_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .contexts
            .iter()
            .map(|c| {
                let current = self.current_context.as_ref() == Some(&c.name);
                vec![
                    if current { "*".into() } else { String::new() },
                    c.name.clone(),
                    c.server.clone().unwrap_or_default(),
                    c.namespace.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let headers = ["CURRENT", "NAME", "SERVER", "NAMESPACE"].map(String::from);
        crate::table::render(&headers, &rows)
    }
}

/// What the flags, environment and file resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub server: String,
    /// The current context's namespace (the -n flag still wins).
    pub namespace: Option<String>,
}

/// A bare host:port is what people type; accept it as http.
fn normalize(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

fn check_address(addr: &str) -> Result<(), ConfigError> {
    if addr.starts_with("http://") || addr.starts_with("https://") || addr.starts_with("unix://") {
        Ok(())
    } else {
        Err(ConfigError::BadAddress {
            addr: addr.to_string(),
        })
    }
}

/// Picks the server address and default namespace. `config` is (path,
/// contents) of the config file if one was found.
pub fn resolve(
    flag: Option<&str>,
    env: Option<&str>,
    config: Option<(&str, &str)>,
    context: Option<&str>,
) -> Result<Resolved, ConfigError> {
    let file = config
        .map(|(p, t)| parse(p, t))
        .transpose()?
        .unwrap_or_default();
    // --context picks a context for one command; else the current one.
    let ctx = match context {
        Some(name) => Some(
            file.contexts
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| ConfigError::NoContext { name: name.into() })?,
        ),
        None => file.current()?,
    };
    let addr = if let Some(a) = flag.filter(|a| !a.is_empty()) {
        a.to_string()
    } else if let Some(a) = env.filter(|a| !a.is_empty()) {
        a.to_string()
    } else if let Some(a) = ctx.and_then(|c| c.server.clone()).or(file.server.clone()) {
        a
    } else {
        DEFAULT_SERVER.to_string()
    };
    let server = normalize(&addr);
    check_address(&server)?;
    Ok(Resolved {
        server,
        namespace: ctx.and_then(|c| c.namespace.clone()),
    })
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

    fn resolve_server(
        flag: Option<&str>,
        env: Option<&str>,
        config: Option<(&str, &str)>,
    ) -> Result<String, ConfigError> {
        resolve(flag, env, config, None).map(|r| r.server)
    }

    #[test]
    fn contexts() {
        let text = "server: http://legacy:1\ncurrent-context: prod\ncontexts:\n- name: prod\n  server: http://p:1\n  namespace: shop\n- name: dev\n";
        let r = resolve(None, None, Some(("/c", text)), None).expect("valid");
        assert_eq!(
            r,
            Resolved {
                server: "http://p:1".into(),
                namespace: Some("shop".into())
            }
        );
        // A context without a server falls back to the top-level one.
        let mut cfg = parse("/c", text).expect("valid");
        cfg.use_context("dev").expect("exists");
        let text2 = serde_yaml::to_string(&cfg).expect("serializes");
        let r = resolve(None, None, Some(("/c", &text2)), None).expect("valid");
        assert_eq!(
            r,
            Resolved {
                server: "http://legacy:1".into(),
                namespace: None
            }
        );
        assert_eq!(
            cfg.use_context("nope"),
            Err(ConfigError::NoContext {
                name: "nope".into()
            })
        );
        // set-context creates, then edits only the given fields.
        assert_eq!(cfg.set_context("lab", Some("127.0.0.1:9"), None), Ok(true));
        assert_eq!(cfg.set_context("lab", None, Some("team")), Ok(false));
        assert_eq!(
            cfg.contexts.last(),
            Some(&Context {
                name: "lab".into(),
                server: Some("http://127.0.0.1:9".into()),
                namespace: Some("team".into())
            })
        );
        assert!(cfg.set_context("bad", Some("ftp://x"), None).is_err());
        let mut gone = cfg.clone();
        assert_eq!(gone.delete_context("dev"), Ok(()));
        assert_eq!(
            gone.current_context, None,
            "deleting the current context unsets it"
        );
        assert_eq!(gone.contexts.len(), 2);
        assert!(gone.delete_context("dev").is_err());
        assert_eq!(
            cfg.contexts_table(),
            "CURRENT   NAME   SERVER               NAMESPACE\n          prod   http://p:1           shop\n*         dev\n          lab    http://127.0.0.1:9   team\n"
        );
        // A current-context that does not exist is an error, not a silent default.
        assert!(resolve(None, None, Some(("/c", "current-context: gone\n")), None).is_err());
        // --context overrides the current context for one command.
        let r = resolve(None, None, Some(("/c", text)), Some("dev")).expect("exists");
        assert_eq!(r.server, "http://legacy:1");
        assert!(resolve(None, None, Some(("/c", text)), Some("gone")).is_err());
        // An empty file is no config.
        assert_eq!(
            resolve(None, None, Some(("/c", "")), None).map(|r| r.server),
            Ok(DEFAULT_SERVER.to_string())
        );
    }
}
