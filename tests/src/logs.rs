//! Reading container logs the way kubelet does: from the CRI log files
//! containerd writes under the node's pod-log-dir
//! (`<dir>/<namespace>_<name>_<uid>/<container>/<restart>.log`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Extracts the payload of CRI-format log lines
/// (`<RFC3339 time> <stdout|stderr> <P|F> <text>`), joining partial (`P`)
/// lines with their continuation. Lines not in that format are kept as they are.
pub fn parse_cri_log(raw: &str) -> String {
    let mut out = String::new();
    for line in raw.lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(_time), Some(stream), Some(tag), text) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if !matches!(stream, "stdout" | "stderr") || !matches!(tag, "P" | "F") {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        out.push_str(text.unwrap_or(""));
        if tag == "F" {
            out.push('\n');
        }
    }
    out
}

/// Every file below `dir`, sorted (container name, then restart count).
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => out.push(e.path()),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// The log of every container of the pod with `uid`, found under `pod_log_dir`
/// by the uid in the pod directory's name.
pub fn read_pod_log(pod_log_dir: &Path, uid: &str) -> Result<String> {
    let rd = fs::read_dir(pod_log_dir)
        .with_context(|| format!("cannot list {}", pod_log_dir.display()))?;
    let Some(dir) = rd.flatten().map(|e| e.path()).find(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains(uid))
    }) else {
        bail!(
            "no log directory for pod uid {uid} under {}",
            pod_log_dir.display()
        );
    };
    let mut all = String::new();
    for f in files_below(&dir) {
        let raw = fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
        all.push_str(&parse_cri_log(&String::from_utf8_lossy(&raw)));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cri_log_lines() {
        let cases = [
            ("2026-11-24T21:00:00.1Z stdout F hello\n", "hello\n"),
            (
                "2026-11-24T21:00:00.1Z stdout P hel\n2026-11-24T21:00:00.2Z stdout F lo\n",
                "hello\n",
            ),
            ("2026-11-24T21:00:00.1Z stderr F oops: a b\n", "oops: a b\n"),
            ("2026-11-24T21:00:00.1Z stdout F \n", "\n"),
            ("not a cri line\n", "not a cri line\n"),
            ("", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_cri_log(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn finds_the_pod_dir_by_uid() {
        let root = std::env::temp_dir().join(format!("weir-e2e-logs-{}", std::process::id()));
        let dir = root.join("default_client_1234-abcd/client");
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(root.join("default_other_9999")).unwrap();
        fs::write(dir.join("0.log"), "2026-11-24T21:00:00Z stdout F pod-a\n").unwrap();
        fs::write(dir.join("1.log"), "2026-11-24T21:00:01Z stdout F pod-b\n").unwrap();
        assert_eq!(read_pod_log(&root, "1234-abcd").unwrap(), "pod-a\npod-b\n");
        assert!(read_pod_log(&root, "nope").is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
