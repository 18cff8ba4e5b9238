//! Choosing and vetting the workspace: the one host directory the command
//! may change.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkspaceError {
    #[error("workspace {0}: no such directory")]
    Missing(String),
    #[error("workspace {0}: not a directory")]
    NotDir(String),
    #[error("workspace {path} is {what}: the command could read and change everything under it, including ~/.ssh and other projects. Pick a project directory (cd into it or pass --workspace DIR), or pass --force-workspace if you really mean it")]
    TooBroad { path: String, what: &'static str },
}

/// The vetted workspace and where the command starts inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Canonical path, bound at the same path inside.
    pub dir: PathBuf,
    /// Working directory inside: the caller's cwd when it lies in the
    /// workspace, else the workspace root.
    pub cwd: PathBuf,
}

/// Resolves `requested` (or `cwd`) and refuses a workspace that would expose
/// the caller's whole home or the whole host, unless `force`.
pub fn resolve(
    requested: Option<&Path>,
    cwd: &Path,
    home: &Path,
    force: bool,
) -> Result<Workspace, WorkspaceError> {
    let given = requested
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.to_path_buf());
    let given = if given.is_absolute() {
        given
    } else {
        cwd.join(given)
    };
    let dir = std::fs::canonicalize(&given)
        .map_err(|_| WorkspaceError::Missing(given.display().to_string()))?;
    if !dir.is_dir() {
        return Err(WorkspaceError::NotDir(dir.display().to_string()));
    }
    let home = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
    if !force {
        let what = if dir == Path::new("/") {
            Some("the root of the file system")
        } else if dir == home {
            Some("your home directory")
        } else if home.starts_with(&dir) {
            Some("a parent of your home directory")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(WorkspaceError::TooBroad {
                path: dir.display().to_string(),
                what,
            });
        }
    }
    let real_cwd = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
    let cwd = if real_cwd.starts_with(&dir) {
        real_cwd
    } else {
        dir.clone()
    };
    Ok(Workspace { dir, cwd })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_root_home_and_parents_unless_forced() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("home/alice");
        let proj = home.join("proj");
        std::fs::create_dir_all(&proj).unwrap();
        for bad in [
            Path::new("/"),
            home.as_path(),
            t.path().join("home").as_path(),
        ] {
            let e = resolve(Some(bad), &proj, &home, false).unwrap_err();
            assert!(matches!(e, WorkspaceError::TooBroad { .. }), "{bad:?}");
            assert!(e.to_string().contains("--force-workspace"));
            assert!(resolve(Some(bad), &proj, &home, true).is_ok());
        }
        let ok = resolve(None, &proj, &home, false).unwrap();
        assert_eq!(ok.dir, std::fs::canonicalize(&proj).unwrap());
        assert_eq!(ok.cwd, ok.dir);
    }

    #[test]
    fn cwd_inside_is_kept_and_outside_falls_back() {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("ws");
        let sub = ws.join("src");
        std::fs::create_dir_all(&sub).unwrap();
        let home = t.path().join("h");
        let r = resolve(Some(&ws), &sub, &home, false).unwrap();
        assert_eq!(r.cwd, std::fs::canonicalize(&sub).unwrap());
        let r = resolve(Some(&ws), t.path(), &home, false).unwrap();
        assert_eq!(r.cwd, r.dir);
    }

    #[test]
    fn missing_and_file() {
        let t = tempfile::tempdir().unwrap();
        let e = resolve(Some(&t.path().join("nope")), t.path(), t.path(), false).unwrap_err();
        assert!(matches!(e, WorkspaceError::Missing(_)));
        let f = t.path().join("f");
        std::fs::write(&f, "").unwrap();
        let e = resolve(Some(&f), t.path(), Path::new("/x"), false).unwrap_err();
        assert!(matches!(e, WorkspaceError::NotDir(_)));
    }
}
