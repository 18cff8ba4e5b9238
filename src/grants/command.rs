//! `moat grant add|list|rm|providers|check`.

use super::providers;
use crate::cli::{GrantAddArgs, GrantCommand};
use crate::credentials::{self, Meta, Store};
use anyhow::{anyhow, bail, Result};
use std::io::{IsTerminal, Read, Write};
use zeroize::Zeroizing;

pub fn run(cmd: &GrantCommand) -> Result<i32> {
    let caller = crate::exec::Caller::current()?;
    let store = Store::for_home(&caller.home);
    match cmd {
        GrantCommand::Add(a) => add(&store, a),
        GrantCommand::List => list(&store),
        GrantCommand::Rm { name } => {
            if store.remove(name).map_err(|e| anyhow!(e))? {
                println!("removed credential `{name}`");
                Ok(0)
            } else {
                bail!(
                    "no credential named `{name}` in {} (`moat grant list`)",
                    store.dir().display()
                )
            }
        }
        GrantCommand::Providers => {
            for p in providers::all().values() {
                println!("{}: {}", p.name, p.description);
                if !p.env.is_empty() {
                    println!("    placeholder in: {}", p.env.join(", "));
                }
                for r in &p.rules {
                    let mut when = String::new();
                    if !r.paths.is_empty() {
                        when.push_str(&format!(" (paths ending {})", r.paths.join(" ")));
                    }
                    if let Some(pre) = &r.token_prefix {
                        when.push_str(&format!(" (tokens starting {pre})"));
                    }
                    println!(
                        "    {}: {}: {}{when}",
                        r.hosts.join(" "),
                        r.header,
                        r.template
                    );
                }
            }
            Ok(0)
        }
        GrantCommand::Check { name } => {
            let (meta, token) = store.load(name).map_err(|e| anyhow!(e))?;
            super::plan(&meta).map_err(|e| anyhow!(e))?;
            let fp = credentials::crypto::fingerprint(token.as_bytes());
            if fp != meta.fingerprint {
                bail!(
                    "{}: the token decrypts but its fingerprint is {fp}, not the recorded {}",
                    store.path(name).display(),
                    meta.fingerprint
                );
            }
            println!("{name}: OK (provider {}, fingerprint {fp})", meta.provider);
            Ok(0)
        }
    }
}

fn add(store: &Store, a: &GrantAddArgs) -> Result<i32> {
    let p = providers::get(&a.provider).map_err(|e| anyhow!(e))?;
    let name = a.name.clone().unwrap_or_else(|| p.name.clone());
    if p.rules.is_empty() {
        if a.hosts.is_empty() || a.header.is_none() || a.value_template.is_none() {
            bail!(
                "provider `{}` needs --host PATTERN, --header NAME and --value-template \
                 'TEMPLATE' (e.g. --header Authorization --value-template 'Bearer {{token}}')",
                p.name
            );
        }
    } else if a.header.is_some() || a.value_template.is_some() {
        bail!(
            "--header and --value-template are for the `header` provider; `{}` forms its own \
             header",
            p.name
        );
    }
    for v in &a.env {
        if v.is_empty()
            || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || v.as_bytes()[0].is_ascii_digit()
        {
            bail!("--env `{v}` is not a variable name");
        }
    }
    let mut meta = Meta {
        name: name.clone(),
        provider: p.name.clone(),
        hosts: a.hosts.clone(),
        header: a.header.clone(),
        template: a.value_template.clone(),
        env: a.env.clone(),
        added_ms: crate::runs::now_ms(),
        fingerprint: String::new(),
    };
    // Everything about the grant is checked before the token is asked for.
    super::plan(&meta).map_err(|e| anyhow!("{e}"))?;
    if !credentials::valid_name(&name) {
        bail!(
            "`{}` is not a valid credential name: use 1 to 64 letters, digits, `-`, `_` and \
             `.`, not starting with `.`",
            name.escape_debug()
        );
    }
    let token = read_token(a, &name)?;
    credentials::check_token(&token).map_err(|e| anyhow!(e))?;
    meta.fingerprint = credentials::crypto::fingerprint(token.as_bytes());
    let notice = store
        .add(&meta, token.as_bytes(), a.replace)
        .map_err(|e| anyhow!(e))?;
    if let Some(n) = notice {
        eprintln!("{n}");
    }
    println!(
        "stored credential `{name}` (provider {}, fingerprint {}) in {}",
        p.name,
        meta.fingerprint,
        store.path(&name).display()
    );
    Ok(0)
}

/// The token: from the named variable, a prompt without echo, or stdin.
fn read_token(a: &GrantAddArgs, name: &str) -> Result<Zeroizing<String>> {
    if let Some(var) = &a.from_env {
        let v = std::env::var_os(var)
            .ok_or_else(|| anyhow!("--from-env {var}: the variable is not set"))?;
        let v = v
            .into_string()
            .map_err(|_| anyhow!("--from-env {var}: the value is not text"))?;
        return Ok(Zeroizing::new(v.trim().to_string()));
    }
    let stdin = std::io::stdin();
    let raw = if stdin.is_terminal() {
        prompt(&format!("Token for `{name}` (not echoed): "))?
    } else {
        let mut buf = Zeroizing::new(Vec::new());
        stdin.lock().take(64 * 1024).read_to_end(&mut buf)?;
        Zeroizing::new(
            String::from_utf8(buf.to_vec())
                .map_err(|_| anyhow!("the token on stdin is not text"))?,
        )
    };
    let t = raw.trim();
    if t.is_empty() {
        bail!("no token given (type it at the prompt, pipe it on stdin, or use --from-env VAR)");
    }
    Ok(Zeroizing::new(t.to_string()))
}

/// Reads a line from the terminal on stdin with echo turned off, restoring
/// the terminal whatever happens.
fn prompt(text: &str) -> Result<Zeroizing<String>> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    tcsetattr(&stdin, SetArg::TCSAFLUSH, &quiet)?;
    let mut line = Zeroizing::new(String::new());
    let r = stdin.read_line(&mut line);
    let restore = tcsetattr(&stdin, SetArg::TCSAFLUSH, &saved);
    r?;
    restore?;
    Ok(line)
}

fn list(store: &Store) -> Result<i32> {
    let entries = store.list().map_err(|e| anyhow!(e))?;
    if entries.is_empty() {
        println!(
            "no credentials in {} (`moat grant add PROVIDER` adds one)",
            store.dir().display()
        );
        return Ok(0);
    }
    println!(
        "{:<20} {:<10} {:<17} {:<9} HOSTS",
        "NAME", "PROVIDER", "ADDED (UTC)", "FINGERPR"
    );
    let mut bad = false;
    for (name, m) in entries {
        match m {
            Ok(m) => {
                let hosts = super::plan(&m)
                    .map(|p| p.hosts().join(" "))
                    .unwrap_or_else(|e| format!("(error: {e})"));
                println!(
                    "{:<20} {:<10} {:<17} {:<9} {hosts}",
                    m.name,
                    m.provider,
                    crate::runs::format_utc(m.added_ms / 1000),
                    m.fingerprint
                );
            }
            Err(e) => {
                bad = true;
                println!("{name:<20} (unreadable: {e})");
            }
        }
    }
    Ok(if bad { crate::exec::EXIT_MOAT_ERROR } else { 0 })
}
