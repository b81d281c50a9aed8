//! weir-cni entry point: read inputs once, dispatch, reply on stdout.
//!
//! stdout carries only the CNI reply; logs go to the configured `logFile`
//! (info and up) or, without one, warnings to stderr.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use cni_plugin::Command;
use cni_plugin::reply::reply;
use tracing::{error, info};
use weir_cni::config::{self, PluginConfig};
use weir_cni::error::PluginError;
use weir_cni::inputs::{self, Target};
use weir_cni::{plugin, result};

fn main() {
    let inputs = match inputs::read() {
        Ok(inputs) => inputs,
        Err(err) => {
            init_logging(None);
            error!(error = %err, "bad invocation");
            reply(result::error_result("1.0.0", &err));
        }
    };
    let requested_version = config::peek_cni_version(&inputs.stdin);
    let target = match (inputs.command, inputs.target) {
        (Command::Version, _) | (_, None) => {
            reply(result::version_result(&requested_version));
        }
        (_, Some(target)) => target,
    };
    let cfg = match config::parse(&inputs.stdin) {
        Ok(cfg) => cfg,
        Err(err) => {
            init_logging(None);
            error!(error = %err, command = inputs.command.as_ref(), "invalid network configuration");
            reply(result::error_result(&requested_version, &err));
        }
    };
    init_logging(cfg.log_file.as_deref());
    let span = tracing::info_span!("cni", command = inputs.command.as_ref(), container_id = %target.container_id, ifname = %target.ifname);
    let _enter = span.enter();
    match run(inputs.command, &cfg, &target) {
        Ok(Some(rendered)) => reply(rendered),
        Ok(None) => {
            // DEL and CHECK answer with no output and exit status 0.
            std::process::exit(0);
        }
        Err(err) => {
            error!(code = err.code(), error = %err, "failed");
            reply(result::error_result(&cfg.cni_version, &err));
        }
    }
}

fn run(
    command: Command,
    cfg: &PluginConfig,
    target: &Target,
) -> Result<Option<result::Rendered>, PluginError> {
    match command {
        Command::Add => {
            let out = plugin::add(cfg, target)?;
            info!(ip = %out.ip, host = %out.host.name, "ADD ok");
            Ok(Some(result::add_result(
                &cfg.cni_version,
                cfg.prev_result.as_ref(),
                &out,
            )))
        }
        Command::Del => plugin::del(cfg, target).map(|()| None),
        Command::Check => plugin::check(cfg, target).map(|()| None),
        Command::Version => Ok(Some(result::Rendered(
            serde_json::to_value(result::version_result(&cfg.cni_version)).unwrap_or_default(),
        ))),
    }
}

/// Installs the tracing subscriber: the log file if one is configured and
/// can be opened, otherwise warnings and errors on stderr. Never stdout.
fn init_logging(log_file: Option<&Path>) {
    let file = log_file.and_then(|path| {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        OpenOptions::new().create(true).append(true).open(path).ok()
    });
    let builder = tracing_subscriber::fmt().with_ansi(false);
    let installed = match file {
        Some(file) => builder
            .with_max_level(tracing::Level::INFO)
            .with_writer(Mutex::new(file))
            .try_init(),
        None => builder
            .with_max_level(tracing::Level::WARN)
            .with_writer(std::io::stderr)
            .try_init(),
    };
    // A second call (cannot happen in one invocation) keeps the first subscriber.
    let _ = installed;
}
