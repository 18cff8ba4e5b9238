//! Profiles: TOML files saying what a sandbox may see and do.
//!
//! A profile is found by name (user directory, then system directory, then
//! the built-ins compiled into moat) or given as a path, may `extends`
//! another, and resolves to a [`Profile`]. Everything is validated on load,
//! with errors pointing at `FILE:LINE:COLUMN`, so a typo cannot silently
//! widen or narrow a sandbox.
//!
//! - `raw`: the file schema and per-file validation.
//! - `layer`: how a file merges over its parent.
//! - `load`: the search path and `extends`.
//! - `render`: printing a resolved profile back as TOML.

mod builtin;
mod error;
mod layer;
mod load;
mod model;
mod raw;
mod render;

pub use error::ProfileError;
pub use model::*;

use crate::cli::ProfileCommand;
use std::io::Write;
use std::path::Path;

/// One profile file (or built-in) as `moat profile list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub name: String,
    /// The file path, or `builtin:NAME`.
    pub source: String,
    /// The resolved description, or `error: ...` when the profile does not
    /// load.
    pub description: String,
    /// The source of the same-name profile found first, when this one can
    /// only be reached by path (or through `extends` of its own name).
    pub shadowed_by: Option<String>,
}

/// Loads a profile by name (searched in the user's and the system's profile
/// directories, then the built-ins) or, when `spec` contains `/` or ends in
/// `.toml`, from that file.
pub fn load(spec: &str) -> Result<Profile, ProfileError> {
    load::Resolver::from_env().load(spec)
}

/// Loads the profile file at `path`; `extends` by name still searches the
/// usual places.
pub fn load_file(path: &Path) -> Result<Profile, ProfileError> {
    load::Resolver::from_env().load_file(path)
}

/// Every profile moat can find, by name, in search order within a name.
pub fn list() -> Vec<Listing> {
    load::Resolver::from_env().list()
}

/// `p` as a self-contained profile file (no `extends`) that loads back to
/// the same settings.
pub fn to_toml(p: &Profile) -> String {
    render::to_toml(p)
}

/// `moat profile ...`. Returns the exit code.
pub fn run(cmd: &ProfileCommand) -> anyhow::Result<i32> {
    match cmd {
        ProfileCommand::List => {
            print(&format_table(&list()))?;
            Ok(0)
        }
        ProfileCommand::Show { name } => match load(name) {
            Ok(profile) => {
                print(&to_toml(&profile))?;
                Ok(0)
            }
            Err(e) => {
                eprintln!("moat: {e}");
                Ok(1)
            }
        },
        ProfileCommand::Check { file } => match load_file(file) {
            Ok(profile) => {
                // Syscall names are checked against moat's tables, which
                // the parser does not know; `exec` would refuse them too.
                if let Err(e) = crate::seccomp_policy::resolve(&profile.seccomp) {
                    eprintln!("{}: [seccomp]: {e}", file.display());
                    return Ok(1);
                }
                print(&check_summary(file, &profile))?;
                Ok(0)
            }
            Err(e) => {
                // Unprefixed, so the line starts with FILE:LINE:COLUMN for
                // editors and CI annotations.
                eprintln!("{e}");
                Ok(1)
            }
        },
    }
}

fn check_summary(file: &Path, profile: &Profile) -> String {
    let parents = profile.sources.get(1..).unwrap_or_default();
    let extends = if parents.is_empty() {
        "nothing".to_string()
    } else {
        parents.join(" -> ")
    };
    format!("{}: ok (extends: {extends})\n", file.display())
}

/// Writes to stdout; a closed pipe (`moat profile show x | head`) is not an
/// error worth reporting.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn format_table(listings: &[Listing]) -> String {
    let rows: Vec<[String; 3]> = listings
        .iter()
        .map(|l| {
            let source = match &l.shadowed_by {
                Some(_) => format!("{} (shadowed)", l.source),
                None => l.source.clone(),
            };
            // One row per profile even if a description spans lines.
            let description = l
                .description
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            [l.name.clone(), source, description]
        })
        .collect();
    let header = [
        "NAME".to_string(),
        "SOURCE".to_string(),
        "DESCRIPTION".to_string(),
    ];
    let width = |col: usize| {
        rows.iter()
            .chain(std::iter::once(&header))
            .map(|r| r[col].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (name_width, source_width) = (width(0), width(1));
    let mut out = String::new();
    for [name, source, description] in std::iter::once(&header).chain(&rows) {
        let line = format!("{name:name_width$}  {source:source_width$}  {description}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let listings = vec![
            Listing {
                name: "default".into(),
                source: "/u/default.toml".into(),
                description: "mine,\n  customised".into(),
                shadowed_by: None,
            },
            Listing {
                name: "default".into(),
                source: "builtin:default".into(),
                description: String::new(),
                shadowed_by: Some("/u/default.toml".into()),
            },
        ];
        assert_eq!(
            format_table(&listings),
            "NAME     SOURCE                      DESCRIPTION\n\
             default  /u/default.toml             mine, customised\n\
             default  builtin:default (shadowed)\n"
        );
    }

    #[test]
    fn check_line() {
        let mut p = Profile {
            sources: vec!["a.toml".into()],
            ..Profile::default()
        };
        assert_eq!(
            check_summary(Path::new("a.toml"), &p),
            "a.toml: ok (extends: nothing)\n"
        );
        p.sources.push("b.toml".into());
        p.sources.push("builtin:default".into());
        assert_eq!(
            check_summary(Path::new("a.toml"), &p),
            "a.toml: ok (extends: b.toml -> builtin:default)\n"
        );
    }
}
