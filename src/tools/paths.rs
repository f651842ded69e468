//! Path confinement: every path a tool touches must resolve, symlinks followed, inside the
//! workspace root. A path that does not exist yet is checked through its nearest existing
//! ancestor. Look-alike characters (fraction slash, fullwidth dot) are ordinary characters in a
//! file name, never separators or `..`.

use anyhow::{bail, Result};
use std::path::{Component, Path, PathBuf};

/// Resolves `p` (relative to `root`, or absolute) and checks it stays inside `root`, which must
/// be canonical. Returns the resolved path.
pub fn confine(root: &Path, p: &str) -> Result<PathBuf> {
    if p.contains('\0') {
        bail!("the path contains a NUL byte");
    }
    let joined = if Path::new(p).is_absolute() {
        PathBuf::from(p)
    } else {
        root.join(p)
    };
    // Split into the longest existing ancestor (canonicalized: symlinks resolved) and the rest.
    let mut existing = joined.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    let base = loop {
        match std::fs::canonicalize(&existing) {
            Ok(c) => break c,
            Err(_) => {
                let Some(name) = existing.file_name() else {
                    bail!("path {p} cannot be resolved");
                };
                rest.push(name.to_os_string());
                if !existing.pop() {
                    bail!("path {p} cannot be resolved");
                }
            }
        }
    };
    let mut out = base;
    for part in rest.iter().rev() {
        match Path::new(part).components().next() {
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::CurDir) => {}
            _ => out.push(part),
        }
    }
    if !out.starts_with(root) {
        bail!(
            "path {p} is outside the workspace {} (after resolving links); tools may only touch files inside it: use a path relative to the workspace, such as `{}`",
            root.display(),
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "notes.md".into())
        );
    }
    Ok(out)
}

/// The path as the model should see it: relative to the workspace.
pub fn show(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .map(|r| {
            let s = r.display().to_string();
            if s.is_empty() {
                ".".into()
            } else {
                s
            }
        })
        .unwrap_or_else(|_| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_refused_and_insiders_allowed() {
        let d = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "x").unwrap();
        assert_eq!(confine(&root, "sub/a.txt").unwrap(), root.join("sub/a.txt"));
        assert_eq!(
            confine(&root, "sub/../sub/a.txt").unwrap(),
            root.join("sub/a.txt")
        );
        assert_eq!(
            confine(&root, "new/dir/file.txt").unwrap(),
            root.join("new/dir/file.txt")
        );
        assert!(confine(&root, "../x").is_err());
        assert!(confine(&root, "sub/../../x").is_err());
        assert!(confine(&root, "new/../../x").is_err());
        assert!(confine(&root, "/etc/passwd").is_err());
        assert!(confine(&root, &root.join("sub/a.txt").display().to_string()).is_ok());
        // Links pointing out, to a file and to a directory.
        std::os::unix::fs::symlink("/etc/passwd", root.join("pw")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        assert!(confine(&root, "pw").is_err());
        assert!(confine(&root, "etc/hostname").is_err());
        assert!(confine(&root, "etc/new-file").is_err());
        // A link that stays inside is fine.
        std::os::unix::fs::symlink(root.join("sub"), root.join("inner")).unwrap();
        assert_eq!(
            confine(&root, "inner/a.txt").unwrap(),
            root.join("sub/a.txt")
        );
        // Look-alikes are plain names.
        let p = confine(&root, "\u{FF0E}\u{FF0E}\u{2215}x").unwrap();
        assert_eq!(p.parent().unwrap(), root);
        assert!(confine(&root, "a\0b").is_err());
    }
}
