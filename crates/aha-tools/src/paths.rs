//! Path confinement: every path a tool touches must resolve, symlinks followed, inside the
//! workspace root. A path that does not exist yet is checked through its nearest existing
//! ancestor; a symbolic link whose target does not exist is refused, since what it will point to
//! is not known until something is created through it. Look-alike characters (fraction slash,
//! fullwidth dot) are ordinary characters in a file name, never separators or `..`.
//!
//! Checking a path by name and then opening it by name leaves a window in which a folder on the
//! way can be swapped for a link. So `confine` checks by name (for clear messages), and every
//! open, create and delete then goes through an open handle on the root: `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (Linux 5.6 and later) on the canonical path, or, where
//! the kernel lacks openat2, one `openat(O_NOFOLLOW)` per component. Either way no link is
//! followed after the check, and the type and link-count checks read the opened file itself
//! (fstat). A regular file with more than one hard link is refused: the other name may be outside
//! the workspace, and nothing in the file tells which.

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// aha's own folder in a workspace (undo store, index). The file tools may read it but never
/// write inside it: a forged undo log is an instruction to `aha undo`.
pub const AHA_DIR: &str = ".aha";

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
                // A name that exists but does not resolve is a link to nothing (or a loop):
                // whatever is created through it lands where the link says, inside or not.
                if std::fs::symlink_metadata(&existing).is_ok_and(|m| m.is_symlink()) {
                    let to = std::fs::read_link(&existing)
                        .map(|t| t.display().to_string())
                        .unwrap_or_else(|_| "?".into());
                    bail!(
                        "path {p}: {} is a symbolic link to {to}, which does not exist (or loops); the file tools refuse links that point nowhere, since one could point outside the workspace. Use another name, or ask the user to remove the link",
                        show(root, &existing)
                    );
                }
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

/// `confine`, for a path a tool will create, change or delete: also refuses aha's own folder.
pub fn confine_writable(root: &Path, p: &str) -> Result<PathBuf> {
    let out = confine(root, p)?;
    if out.starts_with(root.join(AHA_DIR)) {
        bail!(
            "path {p} is inside {AHA_DIR}/, aha's own folder (the undo store and the document index); the file tools may read it but never change it"
        );
    }
    // A hook or `core.fsmonitor` written into a repository's .git would run, outside the
    // sandbox, the next time the user runs git there.
    let rel = out.strip_prefix(root).unwrap_or(&out);
    if rel.components().any(|c| {
        matches!(c, Component::Normal(n) if n.to_str().is_some_and(|n| n.eq_ignore_ascii_case(".git")))
    }) {
        bail!(
            "path {p} is inside a .git folder (git's hooks and config run code outside the sandbox); the file tools never change it: use the git_* tools"
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

/// `path` relative to `root`, made only of plain names (no `..`, `.` or root): the form both
/// openat2 and the component walk take.
fn beneath(root: &Path, path: &Path) -> Result<PathBuf> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| anyhow!("{} is not inside the workspace", path.display()))?;
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!(
            "{} is not a plain path inside the workspace",
            path.display()
        );
    }
    Ok(rel.to_path_buf())
}

fn open_root(root: &Path) -> Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).bits())
        .open(root)
        .with_context(|| format!("cannot open the workspace {}", root.display()))?;
    Ok(f.into())
}

/// Opens `path` (canonical, inside the canonical `root`) with `flags`, following no link on the
/// way; `mode` is used when `flags` creates the file.
fn open_beneath(root: &Path, path: &Path, flags: OFlag, mode: u32) -> Result<File> {
    let shown = show(root, path);
    let rel = beneath(root, path)?;
    let dir = open_root(root)?;
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // openat2 refuses a mode without O_CREAT.
    let mode = if flags.contains(OFlag::O_CREAT) {
        Mode::from_bits_truncate(mode)
    } else {
        Mode::empty()
    };
    let target: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &rel
    };
    let how = OpenHow::new().flags(flags).mode(mode).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    let r = match nix::fcntl::openat2(&dir, target, how) {
        // A kernel before 5.6, or a seccomp filter that hides openat2.
        Err(Errno::ENOSYS) => open_walk(dir, &rel, flags, mode),
        r => r,
    };
    r.map(File::from).map_err(|e| open_error(e, &shown))
}

/// The openat2 fallback: one `openat(O_NOFOLLOW)` per component of `rel` (plain names only).
fn open_walk(root: OwnedFd, rel: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    let parts: Vec<&std::ffi::OsStr> = rel.iter().collect();
    let Some((last, dirs)) = parts.split_last() else {
        return nix::fcntl::openat(&root, ".", flags, mode);
    };
    let mut cur = root;
    for d in dirs {
        cur = nix::fcntl::openat(
            &cur,
            *d,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
    }
    nix::fcntl::openat(&cur, *last, flags, mode)
}

fn open_error(e: Errno, shown: &str) -> anyhow::Error {
    match e {
        Errno::ELOOP => anyhow!(
            "{shown} is, or passes through, a symbolic link (it may have changed since it was checked); the file tools do not follow links at this point"
        ),
        Errno::EXDEV => anyhow!("{shown} resolves outside the workspace; refused"),
        // The component walk reports a link on the way as "not a folder".
        Errno::ENOTDIR => anyhow!(
            "cannot open {shown}: a part of the path is not a folder (or is a symbolic link, which the file tools do not follow at this point)"
        ),
        e => anyhow!(std::io::Error::from(e)).context(format!("cannot open {shown}")),
    }
}

/// Refuses what the file tools must not read or write in place: folders, devices, pipes,
/// sockets, and regular files with more than one hard link.
fn check_kind(shown: &str, dir: bool, regular: bool, links: u64) -> Result<()> {
    if dir {
        bail!("{shown} is a folder, not a file");
    }
    if !regular {
        bail!("{shown} is not a regular file (a device, pipe or socket); the file tools only read and write regular files");
    }
    if links > 1 {
        bail!(
            "{shown} has {links} hard links: it may be the same file as one outside the workspace, so the file tools refuse to read or change it. If it should be edited, ask the user to replace it with a plain copy"
        );
    }
    Ok(())
}

/// Checks the opened file itself, so a swap between `confine` and the open cannot slip through.
fn check_opened(f: &File, shown: &str) -> Result<()> {
    let m = f
        .metadata()
        .with_context(|| format!("cannot inspect {shown}"))?;
    check_kind(shown, m.is_dir(), m.is_file(), m.nlink())
}

/// Refuses a hard-linked or special file by its metadata (for code that hands a path to a
/// library, such as git, instead of opening it here).
pub fn check_metadata(shown: &str, m: &std::fs::Metadata) -> Result<()> {
    if m.is_symlink() {
        return Ok(());
    }
    check_kind(shown, m.is_dir(), m.is_file(), m.nlink())
}

/// Opens a confined file for reading: a regular file with one link.
pub fn open_read(root: &Path, path: &Path) -> Result<File> {
    // O_NONBLOCK: opening a named pipe must not hang the agent; regular files ignore it.
    let f = open_beneath(root, path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)?;
    check_opened(&f, &show(root, path))?;
    Ok(f)
}

/// The bytes of a confined file.
pub fn read(root: &Path, path: &Path) -> Result<Vec<u8>> {
    let mut f = open_read(root, path)?;
    let mut b = Vec::new();
    f.read_to_end(&mut b)
        .with_context(|| format!("cannot read {}", show(root, path)))?;
    Ok(b)
}

/// The bytes of a confined file, or None when nothing is there.
pub fn read_if_exists(root: &Path, path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read(root, path).map(Some),
    }
}

/// Opens a confined file for writing, creating it with `mode` if missing. It is not truncated:
/// the checks run on the opened file first, so a hard link to a file outside is refused before
/// a byte of it changes. `append` opens for appending.
pub fn open_write(root: &Path, path: &Path, mode: u32, append: bool) -> Result<File> {
    let flags = OFlag::O_WRONLY
        | OFlag::O_CREAT
        | OFlag::O_NONBLOCK
        | if append {
            OFlag::O_APPEND
        } else {
            OFlag::empty()
        };
    let f = open_beneath(root, path, flags, mode)?;
    check_opened(&f, &show(root, path))?;
    Ok(f)
}

/// Replaces a confined file's content (creating it and its folders if missing).
pub fn write(root: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let shown = show(root, path);
    if let Some(parent) = path.parent() {
        make_dirs(root, parent, 0o777)?;
    }
    let mut f = open_write(root, path, 0o666, false)?;
    f.set_len(0)
        .and_then(|()| f.write_all(bytes))
        .with_context(|| format!("cannot write {shown}"))
}

/// Creates the folders of `dir` (canonical, inside `root`) that are missing, with `mode`; refuses
/// a link or a file on the way.
pub fn make_dirs(root: &Path, dir: &Path, mode: u32) -> Result<()> {
    let rel = beneath(root, dir)?;
    let mut cur = open_root(root)?;
    let mut sofar = PathBuf::new();
    for part in rel.iter() {
        sofar.push(part);
        let open = |d: &OwnedFd| {
            nix::fcntl::openat(
                d,
                part,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        };
        let next = match open(&cur) {
            Err(Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(&cur, part, Mode::from_bits_truncate(mode)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(anyhow!(std::io::Error::from(e))).with_context(|| {
                            format!("cannot create the folder {}", sofar.display())
                        })
                    }
                }
                open(&cur)
            }
            r => r,
        };
        cur = match next {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let link =
                    std::fs::symlink_metadata(root.join(&sofar)).is_ok_and(|m| m.is_symlink());
                if link {
                    bail!(
                        "{} is a symbolic link, not a folder; the file tools do not create files through links",
                        sofar.display()
                    );
                }
                bail!("{} is not a folder", sofar.display());
            }
            Err(e) => {
                return Err(anyhow!(std::io::Error::from(e)))
                    .with_context(|| format!("cannot open the folder {}", sofar.display()))
            }
        };
    }
    Ok(())
}

/// Deletes a confined regular file (one link); links, folders and hard-linked files are refused.
pub fn remove(root: &Path, path: &Path) -> Result<()> {
    let shown = show(root, path);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        bail!("{shown} cannot be deleted");
    };
    let dir = open_beneath(root, parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
    let st = nix::sys::stat::fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| anyhow!(std::io::Error::from(e)))
        .with_context(|| format!("cannot delete {shown}"))?;
    let kind = st.st_mode & nix::sys::stat::SFlag::S_IFMT.bits();
    if kind == nix::sys::stat::SFlag::S_IFLNK.bits() {
        bail!("{shown} is a symbolic link now, not the file that was there; not deleted");
    }
    check_kind(
        &shown,
        kind == nix::sys::stat::SFlag::S_IFDIR.bits(),
        kind == nix::sys::stat::SFlag::S_IFREG.bits(),
        st.st_nlink as u64,
    )?;
    nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
        .map_err(|e| anyhow!(std::io::Error::from(e)))
        .with_context(|| format!("cannot delete {shown}"))
}

/// The entries of a confined folder: (name, is a folder). The folder is opened beneath the root
/// first; listing by name cannot be done on that handle with std alone, so the handle's identity
/// is compared with the listed folder's afterwards.
pub fn list(root: &Path, dir: &Path) -> Result<Vec<(String, bool)>> {
    let shown = show(root, dir);
    let f = open_beneath(root, dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
    let opened = f
        .metadata()
        .with_context(|| format!("cannot list {shown}"))?;
    let names: Vec<(String, bool)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {shown}"))?
        .filter_map(|e| e.ok())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.file_type().map(|t| t.is_dir()).unwrap_or(false),
            )
        })
        .collect();
    let listed = std::fs::symlink_metadata(dir).with_context(|| format!("cannot list {shown}"))?;
    if (listed.dev(), listed.ino()) != (opened.dev(), opened.ino()) {
        bail!("{shown} changed while it was being listed; try again");
    }
    Ok(names)
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

    fn ws() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        let root = base.join("ws");
        let outside = base.join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        (d, root, outside)
    }

    #[test]
    fn dangling_links_are_refused_wherever_they_point() {
        let (_d, root, outside) = ws();
        std::os::unix::fs::symlink(outside.join("new.txt"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("missing.txt", root.join("in")).unwrap();
        std::os::unix::fs::symlink(outside.join("nodir"), root.join("outdir")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        for p in ["out", "in", "outdir/x.txt", "loop"] {
            let e = confine(&root, p).unwrap_err().to_string();
            assert!(
                e.contains("symbolic link") && e.contains("does not exist"),
                "{p}: {e}"
            );
        }
        // Opening by the resolved name would not follow the link either.
        assert!(write(&root, &root.join("out"), b"x").is_err());
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
    }

    #[test]
    fn hard_links_are_neither_read_nor_written_nor_deleted() {
        let (_d, root, outside) = ws();
        std::fs::write(outside.join("secret"), "secret\n").unwrap();
        std::fs::hard_link(outside.join("secret"), root.join("hl")).unwrap();
        let p = confine(&root, "hl").unwrap();
        for e in [
            read(&root, &p).unwrap_err(),
            write(&root, &p, b"changed").unwrap_err(),
            open_write(&root, &p, 0o600, true).unwrap_err(),
            remove(&root, &p).unwrap_err(),
        ] {
            assert!(e.to_string().contains("hl has 2 hard links"), "{e}");
        }
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "secret\n"
        );
        assert!(root.join("hl").exists());
    }

    #[test]
    fn normal_files_are_read_written_created_and_deleted() {
        let (_d, root, _outside) = ws();
        let p = confine(&root, "new/deep/a.txt").unwrap();
        write(&root, &p, b"one\ntwo\n").unwrap();
        write(&root, &p, b"1\n").unwrap();
        assert_eq!(read(&root, &p).unwrap(), b"1\n", "truncated before writing");
        assert_eq!(read_if_exists(&root, &root.join("nope")).unwrap(), None);
        let names = list(&root, &root.join("new")).unwrap();
        assert_eq!(names, vec![("deep".to_string(), true)]);
        assert!(read(&root, &root.join("new"))
            .unwrap_err()
            .to_string()
            .contains("is a folder"));
        remove(&root, &p).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn links_on_the_way_are_not_followed_after_the_check() {
        let (_d, root, outside) = ws();
        std::fs::create_dir(outside.join("dir")).unwrap();
        std::fs::write(outside.join("dir/f"), "outside\n").unwrap();
        // As if `sub` were swapped for a link between `confine` and the open.
        std::os::unix::fs::symlink(outside.join("dir"), root.join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.join("dir/f"), root.join("f")).unwrap();
        let e = read(&root, &root.join("sub/f")).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(read(&root, &root.join("f")).is_err());
        assert!(write(&root, &root.join("sub/new"), b"x").is_err());
        let e = make_dirs(&root, &root.join("sub/deeper"), 0o700).unwrap_err();
        assert!(e.to_string().contains("sub is a symbolic link"), "{e}");
        assert!(remove(&root, &root.join("sub/f")).is_err());
        assert!(remove(&root, &root.join("f")).is_err());
        assert!(list(&root, &root.join("sub")).is_err());
        assert!(!outside.join("dir/new").exists() && !outside.join("dir/deeper").exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("dir/f")).unwrap(),
            "outside\n"
        );
        // The fallback for kernels without openat2 refuses the same links.
        let walk = |rel: &str| {
            open_walk(
                open_root(&root).unwrap(),
                Path::new(rel),
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
        };
        // A link as a folder on the way: ENOTDIR (O_DIRECTORY) rather than ELOOP.
        assert!(matches!(
            walk("sub/f").unwrap_err(),
            Errno::ELOOP | Errno::ENOTDIR
        ));
        assert_eq!(walk("f").unwrap_err(), Errno::ELOOP);
        std::fs::create_dir(root.join("real")).unwrap();
        std::fs::write(root.join("real/g"), "g").unwrap();
        assert!(walk("real/g").is_ok());
    }

    #[test]
    fn pipes_and_aha_are_refused() {
        let (_d, root, _outside) = ws();
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        // Refused at once instead of waiting for a writer.
        let e = read(&root, &root.join("fifo")).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::create_dir_all(root.join(".aha/checkpoints")).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(".aha/checkpoints", root.join("store")).unwrap();
        for p in [
            ".aha/checkpoints/log.jsonl",
            "store/log.jsonl",
            ".aha",
            "sub/../.aha/new",
        ] {
            let e = confine_writable(&root, p).unwrap_err().to_string();
            assert!(e.contains("aha's own folder"), "{p}: {e}");
        }
        assert!(
            confine(&root, ".aha/checkpoints").is_ok(),
            "reading is allowed"
        );
        assert!(confine_writable(&root, ".ahax/file").is_ok());
        // git's hooks and config run code outside the sandbox: never written by the tools.
        for p in [
            ".git/hooks/pre-commit",
            ".git/config",
            "sub/.git/hooks/x",
            ".GIT/config",
        ] {
            let e = confine_writable(&root, p).unwrap_err().to_string();
            assert!(e.contains(".git folder"), "{p}: {e}");
        }
        assert!(confine_writable(&root, ".gitignore").is_ok());
    }
}
