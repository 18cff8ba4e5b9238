//! `moat exec`: turns the command line and a profile into a sandbox [`Spec`]
//! and runs it.

use crate::cli::ExecArgs;
use crate::environment::{self, EnvRequest, Identity, ProxyEnv};
use crate::mount_plan::{self, Context, Plan, RealHost};
use crate::profile::{NetworkMode, Profile};
use crate::sandbox::{self, Outcome, PrepareProxy, Spec};
use crate::workspace;
use anyhow::{anyhow, bail, Context as _, Result};
use std::ffi::CString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Exit status for moat's own failures (bad profile, setup error), kept
/// apart from 126/127 and from what the command itself returns.
pub const EXIT_MOAT_ERROR: i32 = 125;

/// Who is calling: the ids that map into the sandbox and the home that
/// becomes an empty tmpfs.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub home: PathBuf,
}

impl Caller {
    pub fn current() -> Result<Caller> {
        let uid = nix::unistd::geteuid();
        let gid = nix::unistd::getegid();
        let pw = nix::unistd::User::from_uid(uid).ok().flatten();
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute() && h != Path::new("/"))
            .or_else(|| pw.as_ref().map(|p| p.dir.clone()))
            .ok_or_else(|| anyhow!("cannot tell your home directory: set HOME"))?;
        let user = pw
            .map(|p| p.name)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| uid.to_string());
        Ok(Caller {
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            user,
            home,
        })
    }
}

fn cstring(s: impl Into<Vec<u8>>, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| anyhow!("{what} contains a NUL byte"))
}

/// A run ready to start: the sandbox spec plus what the run record and the
/// after-run checks need.
pub struct Prepared {
    pub spec: Spec,
    /// Protected paths absent at start (see `mount_plan::Plan`).
    pub absent_protected: Vec<PathBuf>,
    pub record: crate::runs::Record,
    /// Starts the proxy once init hands over its socket; `None` when the
    /// profile gives the sandbox no network.
    pub prepare_proxy: Option<PrepareProxy>,
    /// This run's request log, when it has a proxy.
    pub request_log: Option<PathBuf>,
    /// Names of the profile's secrets that were resolved and set in the
    /// sandbox (never their values), for the run's records.
    pub secret_names: Vec<String>,
    /// The audit log, open (the run must not start otherwise).
    pub audit: std::sync::Arc<crate::audit::Recorder>,
    /// The run's `start` event.
    pub audit_start: serde_json::Value,
}

/// What a run with a network needs beyond the profile: the proxy's
/// variables, its starter and its log.
struct Network {
    env: ProxyEnv,
    prepare: PrepareProxy,
    log_path: PathBuf,
}

/// Everything the proxy needs, decided before the sandbox exists: the
/// compiled policy, moat's CA (made on first use), the sandbox's CA bundle
/// bound over the host's bundle paths in `plan`.
fn prepare_network(
    profile: &Profile,
    caller: &Caller,
    plan: &mut Plan,
    run_id: &str,
    grants: Vec<crate::grants::Plan>,
    audit: std::sync::Arc<crate::audit::Recorder>,
    verbose: bool,
) -> Result<Network> {
    let net = &profile.network;
    let policy = crate::network_policy::Policy::new(net)
        .map_err(|e| anyhow!("profile `{}`: [network]: {e}", profile.name))?;
    let upstream_ca = crate::proxy::serve::upstream_ca_files(net, &caller.home)
        .map_err(|e| anyhow!("profile `{}`: {e:#}", profile.name))?;

    let data_dir = crate::ca::data_dir(&caller.home);
    let cert_path = crate::ca::ensure(&data_dir).context("moat's CA")?;
    let bundle = crate::ca::sandbox_bundle(&data_dir, &cert_path, crate::ca::BUNDLE_PATHS)
        .context("the sandbox's CA bundle")?;
    let bound = mount_plan::overlay_file(plan, &bundle.path, crate::ca::BUNDLE_PATHS, &RealHost);
    if bound.is_empty() {
        eprintln!(
            "moat: warning: no CA bundle of the host ({}) is visible in the sandbox, so \
             HTTPS clients there will not trust moat's CA ({})",
            crate::ca::BUNDLE_PATHS.join(", "),
            cert_path.display()
        );
    }
    if verbose {
        eprintln!(
            "moat: network: {} through 127.0.0.1:{}; CA {}; sandbox bundle {} (host roots from {})",
            match net.mode {
                NetworkMode::Allowlist => "allowlist",
                NetworkMode::Open => "open",
                NetworkMode::None => "none",
            },
            net.proxy_port,
            cert_path.display(),
            bundle.path.display(),
            match &bundle.host {
                Some(p) => p.display().to_string(),
                None => "nowhere".to_string(),
            }
        );
    }

    let runs_dir = crate::runs::dir(&caller.home);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&runs_dir)
        .with_context(|| format!("creating {}", runs_dir.display()))?;
    let log_path = runs_dir.join(format!("{run_id}.requests.jsonl"));
    let run_id = run_id.to_string();
    let log = log_path.clone();
    let home = caller.home.clone();
    let prepare: PrepareProxy = Box::new(move || {
        let ca = crate::ca::load_or_create(&data_dir).map_err(|e| format!("moat's CA: {e:#}"))?;
        // The tokens are decrypted only now, after the sandbox's init was
        // cloned: they never exist in a process the sandbox came from.
        let grants = load_grant_tokens(&home, grants)?;
        let cfg = crate::proxy::Config {
            policy,
            ca,
            upstream_ca,
            log_path: log,
            run_id,
            grants,
        };
        let ready = crate::proxy::prepare_audited(cfg, audit).map_err(|e| e.to_string())?;
        Ok(Box::new(move |listener| {
            // A proxy that cannot start must stop the run before the
            // command exists, however long the failure takes to show;
            // tests have no other reliable way to make a slow start fail.
            if std::env::var_os("MOAT_TEST_FAIL_PROXY_START").is_some_and(|v| v == "1") {
                std::thread::sleep(std::time::Duration::from_millis(300));
                return Err("MOAT_TEST_FAIL_PROXY_START=1 is set".into());
            }
            ready.serve(listener).map_err(|e| e.to_string())
        }) as crate::sandbox::StartProxy)
    });
    Ok(Network {
        env: ProxyEnv {
            port: net.proxy_port,
            ca_bundle: bound.first().map(|p| p.to_string_lossy().into_owned()),
        },
        prepare,
        log_path,
    })
}

/// The grants a run asks for (profile `grants`, then `--grant`), checked
/// now: each exists and decrypts with the key at hand (the token is wiped
/// again at once; the proxy decrypts it again after the sandbox is
/// cloned).
fn plan_grants(
    profile: &Profile,
    args: &ExecArgs,
    caller: &Caller,
) -> Result<Vec<crate::grants::Plan>> {
    let mut names: Vec<String> = profile.grants.clone();
    for g in &args.grants {
        if !names.contains(g) {
            names.push(g.clone());
        }
    }
    if names.is_empty() {
        return Ok(Vec::new());
    }
    if profile.network.mode == NetworkMode::None {
        bail!(
            "profile `{}` has network mode none, so grants ({}) have nothing to go through",
            profile.name,
            names.join(", ")
        );
    }
    let store = crate::credentials::Store::for_home(&caller.home);
    let mut plans: Vec<crate::grants::Plan> = Vec::new();
    for name in names {
        let (meta, token) = store
            .load(&name)
            .map_err(|e| anyhow!("grant `{name}`: {e}"))?;
        drop(token);
        let plan = crate::grants::plan(&meta).map_err(|e| anyhow!("grant `{name}`: {e}"))?;
        for var in &plan.env {
            if let Some(other) = plans.iter().find(|p| p.env.contains(var)) {
                bail!(
                    "grants `{}` and `{}` both set {var} in the sandbox; give one of them \
                     other variables (`moat grant add ... --env VAR --replace`)",
                    other.name,
                    plan.name
                );
            }
        }
        plans.push(plan);
    }
    Ok(plans)
}

/// The grants with their tokens, for the proxy.
fn load_grant_tokens(
    home: &Path,
    plans: Vec<crate::grants::Plan>,
) -> std::result::Result<Vec<crate::grants::Grant>, String> {
    let store = crate::credentials::Store::for_home(home);
    plans
        .into_iter()
        .map(|planned| {
            let name = planned.name.clone();
            let (meta, token) = store
                .load(&name)
                .map_err(|e| format!("grant `{name}`: {e}"))?;
            let plan = crate::grants::plan(&meta).map_err(|e| format!("grant `{name}`: {e}"))?;
            if plan.hosts() != planned.hosts() || plan.placeholder != planned.placeholder {
                return Err(format!(
                    "grant `{name}` changed while the run was starting; run again"
                ));
            }
            Ok(crate::grants::Grant { plan, token })
        })
        .collect()
}

/// moat's own data directory (the credential store, its key file, the CA
/// key) stays hidden even when the profile or the workspace would show it
/// (a profile binding `~/.local/share`, a workspace that is the home).
fn hide_moat_data(plan: &mut Plan, data_dir: &Path) {
    let Ok(real) = data_dir.canonicalize() else {
        return;
    };
    let mut masks = Vec::new();
    for step in &plan.steps {
        if let mount_plan::Step::Bind { src, dst, .. } = step {
            if let Ok(rest) = real.strip_prefix(src) {
                masks.push(dst.join(rest));
            }
        }
    }
    for at in masks {
        if !plan.steps.iter().any(|s| s.dst() == at) {
            plan.steps.push(mount_plan::Step::Mask {
                at,
                kind: mount_plan::Kind::Dir,
            });
        }
    }
}

/// Builds the spec. Every check that can fail happens here, before any
/// namespace exists, so a bad input never leaves a half-built sandbox.
pub fn prepare(args: &ExecArgs, caller: &Caller, verbose: bool) -> Result<Prepared> {
    let mut profile = crate::profile::load(&args.profile).map_err(|e| anyhow!("{e}"))?;
    let grants = plan_grants(&profile, args, caller)?;
    // A grant's hosts are reachable: they are what it is for.
    for g in &grants {
        for h in g.hosts() {
            if !profile.network.allow.contains(&h) {
                profile.network.allow.push(h);
            }
        }
        if verbose {
            eprintln!(
                "moat: grant {} ({}): hosts {}; placeholder in {}",
                g.name,
                g.provider,
                g.hosts().join(" "),
                if g.env.is_empty() {
                    "no variable".to_string()
                } else {
                    g.env.join(", ")
                }
            );
        }
    }
    // (variable, grant) pairs, for the clash check with `[secrets]`.
    let grants_env: Vec<(String, String)> = grants
        .iter()
        .flat_map(|g| g.env.iter().map(|v| (v.clone(), g.name.clone())))
        .collect();
    let placeholders: Vec<(String, String)> = grants
        .iter()
        .flat_map(|g| g.env.iter().map(|v| (v.clone(), g.placeholder.clone())))
        .collect();
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let ws = workspace::resolve(
        args.workspace.as_deref(),
        &cwd,
        &caller.home,
        args.force_workspace,
    )?;
    let mut plan = mount_plan::build(
        &profile,
        &Context {
            home: caller.home.clone(),
            workspace: ws.dir.clone(),
        },
        &RealHost,
    )
    .map_err(|e| anyhow!("profile `{}`: {e}", profile.name))?;
    hide_moat_data(&mut plan, &crate::ca::data_dir(&caller.home));
    let run_id = crate::runs::new_id();
    // Fail closed: no audit log, no run.
    let audit = crate::audit::Recorder::open(&crate::audit::data_dir(&caller.home), &run_id)
        .map_err(|e| {
            anyhow!(
                "the audit log cannot be opened ({e:#}); moat does not run anything it cannot record: fix the permissions of, or free space in, {}",
                crate::audit::data_dir(&caller.home).display()
            )
        })?;
    let network = match profile.network.mode {
        NetworkMode::None => None,
        NetworkMode::Allowlist | NetworkMode::Open => Some(prepare_network(
            &profile,
            caller,
            &mut plan,
            &run_id,
            grants,
            std::sync::Arc::clone(&audit),
            verbose,
        )?),
    };

    let cli_env = args
        .env
        .iter()
        .map(|a| environment::parse_assignment(a).map_err(|e| anyhow!(e)))
        .collect::<Result<Vec<_>>>()?;
    let host_env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let cwd_str = ws.cwd.to_string_lossy().into_owned();
    let mut env = environment::build(&EnvRequest {
        host: &host_env,
        pass: &profile.pass_env,
        profile_env: &profile.env,
        cli_env: &cli_env,
        identity: &Identity {
            home: caller.home.to_string_lossy().into_owned(),
            user: caller.user.clone(),
        },
        cwd: &cwd_str,
        proxy: network.as_ref().map(|n| n.env.clone()),
    });
    // Placeholders win over any value of the same name: the real token
    // must not come in from the host's environment either.
    env.extend(placeholders);
    let path = env
        .get("PATH")
        .map(|p| p.split(':').map(PathBuf::from).collect())
        .unwrap_or_default();
    for g in &grants_env {
        if profile.secrets.contains_key(&g.0) {
            bail!(
                "{} is both a secret of profile `{}` and the placeholder variable of grant `{}`; \
                 rename one",
                g.0,
                profile.name,
                g.1
            );
        }
    }
    let secrets = resolve_secrets(&profile, &cli_env, caller, verbose)?;
    let mut env = env
        .iter()
        // A secret replaces a variable passed through from the host.
        .filter(|(k, _)| !profile.secrets.contains_key(*k))
        .map(|(k, v)| cstring(format!("{k}={v}"), &format!("environment variable {k}")))
        .collect::<Result<Vec<_>>>()?;
    for (name, value) in &secrets.values {
        let mut entry = zeroize::Zeroizing::new(Vec::with_capacity(name.len() + 1 + value.len()));
        entry.extend_from_slice(name.as_bytes());
        entry.push(b'=');
        entry.extend_from_slice(value);
        // Checked for NUL when resolved. Moved, not copied: the CString
        // is the one copy left, and the sandbox's environment needs it.
        env.push(cstring(
            std::mem::take(&mut *entry),
            &format!("secret {name}"),
        )?);
    }
    let secret_names = secrets.names();
    if args.command.is_empty() {
        bail!("no command given: moat exec [OPTIONS] -- CMD [ARGS]");
    }
    let argv = args
        .command
        .iter()
        .map(|a| cstring(a.as_str(), "an argument"))
        .collect::<Result<Vec<_>>>()?;

    if verbose {
        eprintln!(
            "moat: profile {} ({})",
            profile.name,
            profile.sources.join(" <- ")
        );
        eprintln!(
            "moat: workspace {} (cwd {})",
            ws.dir.display(),
            ws.cwd.display()
        );
        for step in &plan.steps {
            eprintln!("moat:   {step:?}");
        }
    }
    let absent = plan.absent_protected.clone();
    let landlock = crate::landlock_policy::rules(&plan, &profile, &caller.home);
    // Refuse a `required` profile here, before any namespace exists; init
    // checks again against what the kernel actually enforced.
    crate::landlock_policy::decide(&landlock, sandbox::landlock::probe())
        .map_err(|e| anyhow!("profile `{}`: {e}", profile.name))?;
    if verbose {
        for p in &landlock.skipped {
            eprintln!(
                "moat: landlock: {} is mounted but gets no Landlock rule ([landlock] skip)",
                p.display()
            );
        }
    }
    let seccomp = crate::seccomp_policy::compile(&profile.seccomp)
        .map_err(|e| anyhow!("profile `{}`: [seccomp]: {e}", profile.name))?;
    let limits = crate::cgroup::resolve(&profile.limits)
        .map_err(|e| anyhow!("profile `{}`: {e}", profile.name))?;
    if let Some(w) = &limits.warning {
        eprintln!("moat: warning: {w}");
    }
    let audit_start = serde_json::json!({
        "profile": profile.name,
        "profile_sources": profile.sources,
        "profile_sha256": crate::audit::canonical::hex(&sha2::Digest::finalize(
            sha2::Digest::chain_update(
                <sha2::Sha256 as sha2::Digest>::new(),
                crate::profile::to_toml(&profile).as_bytes()
            )
        )),
        "command": args.command,
        "uid": caller.uid,
        "gid": caller.gid,
        "user": caller.user,
        "workspace": ws.dir,
        "cwd": ws.cwd,
        "network": match profile.network.mode {
            NetworkMode::Allowlist => "allowlist",
            NetworkMode::Open => "open",
            NetworkMode::None => "none",
        },
        "landlock_mode": format!("{:?}", landlock.mode).to_lowercase(),
        "landlock_paths": landlock.paths.len(),
        "seccomp_syscall_rules": seccomp.syscalls,
        "limits": limits.plan,
    });
    let record = crate::runs::Record {
        id: run_id,
        started_ms: crate::runs::now_ms(),
        ended_ms: None,
        profile: profile.name.clone(),
        profile_sources: profile.sources.clone(),
        command: args.command.clone(),
        workspace: ws.dir.clone(),
        uid: caller.uid,
        hardening: None,
        exit_code: None,
        ended_by: Vec::new(),
        peak_memory: None,
        secrets: secret_names.clone(),
    };
    Ok(Prepared {
        spec: Spec {
            plan,
            hostname: profile.hostname.clone(),
            argv,
            env,
            path,
            cwd: ws.cwd,
            uid: caller.uid,
            gid: caller.gid,
            use_pty: sandbox::pty::wanted(),
            landlock,
            seccomp,
            limits: limits.plan,
            proxy_port: network.as_ref().map(|n| n.env.port),
        },
        absent_protected: absent,
        record,
        request_log: network.as_ref().map(|n| n.log_path.clone()),
        prepare_proxy: network.map(|n| n.prepare),
        secret_names,
        audit,
        audit_start,
    })
}

/// Reads the profile's `[secrets]` on the host, before any namespace
/// exists (keyring calls run on a thread that is joined again). Prints
/// names and sources only.
fn resolve_secrets(
    profile: &Profile,
    cli_env: &[(String, String)],
    caller: &Caller,
    verbose: bool,
) -> Result<crate::secrets::Resolved> {
    if let Some((k, _)) = cli_env
        .iter()
        .find(|(k, _)| profile.secrets.contains_key(k))
    {
        bail!(
            "-e {k}: `{k}` is a secret of profile `{}`; a variable comes from one of them \
             only: drop the -e, or use a profile without that secret",
            profile.name
        );
    }
    let host = crate::secrets::RealHost {
        home: caller.home.clone(),
    };
    let resolved = crate::secrets::resolve(&profile.secrets, &host)
        .map_err(|e| anyhow!("profile `{}`: {e}", profile.name))?;
    for notice in &resolved.notices {
        eprintln!("moat: {notice}");
    }
    if verbose {
        for name in resolved.names() {
            eprintln!("moat: secret {name} from {}", profile.secrets[&name]);
        }
    }
    Ok(resolved)
}

/// The run record's end, from the run's report.
fn fill_record(record: &mut crate::runs::Record, report: &sandbox::RunReport) {
    record.ended_ms = Some(crate::runs::now_ms());
    record.hardening = Some(report.hardening.clone());
    record.exit_code = Some(report.outcome.exit_code());
    record.ended_by = report.ended_by.clone();
    record.peak_memory = report.peak_memory;
}

/// Records the run's limit hits and exit in the audit log and signs its
/// end.
fn record_end(
    audit: &crate::audit::Recorder,
    report: &sandbox::RunReport,
    started: std::time::Instant,
) -> Result<(), String> {
    if let Some(f) = audit.failure() {
        return Err(f);
    }
    let mut batch: Vec<(&str, serde_json::Value)> = report
        .ended_by
        .iter()
        .map(|line| ("limit", serde_json::json!({ "reason": line })))
        .collect();
    let (how, signal, message) = match &report.outcome {
        Outcome::Finished(s) if libc::WIFSIGNALED(*s) => {
            ("signaled", Some(libc::WTERMSIG(*s)), None)
        }
        Outcome::Finished(_) => ("exited", None, None),
        Outcome::NotStarted { message, .. } => ("not_started", None, Some(message.clone())),
        Outcome::TimedOut => ("timed_out", None, None),
    };
    batch.push((
        "exit",
        serde_json::json!({
            "exit_code": report.outcome.exit_code(),
            "outcome": how,
            "signal": signal,
            "message": message,
            "duration_ms": started.elapsed().as_millis() as u64,
            "peak_memory": report.peak_memory,
            "requests": report.network.as_ref().map(|n| n.requests),
            "denied": report.network.as_ref().map(|n| n.denied),
        }),
    ));
    // One write: the exit and the run's last checkpoint.
    audit.finish_with(&batch)
}

/// Runs `moat exec`; returns the process exit status.
pub fn run(args: &ExecArgs, verbose: bool) -> i32 {
    let caller = match Caller::current() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("moat: {e:#}");
            return EXIT_MOAT_ERROR;
        }
    };
    let Prepared {
        spec,
        absent_protected: absent,
        mut record,
        prepare_proxy,
        request_log,
        secret_names,
        audit,
        audit_start,
    } = match prepare(args, &caller, verbose) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("moat: {e:#}");
            return EXIT_MOAT_ERROR;
        }
    };
    // Recorded while init builds the sandbox, before the command may start.
    let record_start = {
        let audit = std::sync::Arc::clone(&audit);
        let secret_names = secret_names.clone();
        Box::new(move || {
            audit.event("start", audit_start)?;
            // Which secrets the sandbox got, by name: the values stay out
            // of the log.
            let secrets = secret_names
                .iter()
                .map(|name| serde_json::json!({ "name": name }))
                .collect();
            audit.events("secret", secrets)
        })
    };
    let started = std::time::Instant::now();
    let runs_dir = crate::runs::dir(&caller.home);
    // Where the run record went, once written.
    let mut saved: Option<Result<PathBuf>> = None;
    let record_end = {
        let (audit, record, runs_dir, saved) = (&audit, &mut record, &runs_dir, &mut saved);
        Box::new(move |report: &sandbox::RunReport| {
            fill_record(record, report);
            // The run record and the audit log's last checkpoint each wait
            // for the disk; side by side, the run ends sooner.
            let (copy, dir) = (record.clone(), runs_dir.clone());
            let saving = std::thread::spawn(move || copy.save(&dir));
            let audited = record_end(audit, report, started);
            *saved = Some(
                saving
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("the thread saving it panicked"))),
            );
            audited
        })
    };
    let report = match sandbox::run(
        &spec,
        prepare_proxy,
        Some(sandbox::Audit {
            recorder: &audit,
            record_start,
            record_end,
        }),
    ) {
        Ok(r) => r,
        Err(e) => {
            // The audit failure, when there was one, is why the run ended.
            if let Some(f) = audit.failure() {
                eprintln!("moat: {f}");
                return EXIT_MOAT_ERROR;
            }
            eprintln!("moat: {e}");
            let _ = audit.event(
                "exit",
                serde_json::json!({
                    "exit_code": EXIT_MOAT_ERROR,
                    "error": e.to_string(),
                    "duration_ms": started.elapsed().as_millis() as u64,
                }),
            );
            if let Err(f) = audit.finish() {
                eprintln!("moat: {f}");
            }
            return EXIT_MOAT_ERROR;
        }
    };
    // The end was recorded as the command ended; the sandbox's teardown
    // may still have hit a limit (see `sandbox::Audit`).
    if record.ended_by != report.ended_by || record.peak_memory != report.peak_memory {
        record.ended_by = report.ended_by.clone();
        record.peak_memory = report.peak_memory;
        saved = Some(record.save(&runs_dir));
    }
    match saved {
        Some(Ok(path)) if verbose => eprintln!("moat: run record {}", path.display()),
        Some(Ok(_)) | None => {}
        Some(Err(e)) => eprintln!("moat: warning: could not save the run record: {e:#}"),
    }
    if let Err(f) = report.end_recorded.clone() {
        eprintln!("moat: {f}");
        return EXIT_MOAT_ERROR;
    }
    if verbose {
        let h = &report.hardening;
        eprintln!(
            "moat: landlock: ABI {}, {} enforced{}",
            h.landlock.abi,
            h.landlock.status,
            h.landlock
                .notes
                .iter()
                .map(|n| format!("; {n}"))
                .collect::<String>()
        );
        eprintln!(
            "moat: capabilities: {}; no_new_privs: {}",
            if h.capabilities.all_dropped {
                "all dropped"
            } else {
                "NOT all dropped"
            },
            h.capabilities.no_new_privs
        );
        eprintln!(
            "moat: seccomp: {} ({} syscall rules)",
            if h.seccomp.installed {
                "installed"
            } else {
                "NOT installed"
            },
            h.seccomp.denied_syscalls
        );
    }
    if verbose && spec.limits.needs_group() {
        eprintln!(
            "moat: cgroup: the sandbox was {} the run's group",
            if report.born_in_cgroup {
                "born in (clone3 into cgroup2)"
            } else {
                "moved into"
            }
        );
    }
    if verbose {
        if let (Some(n), Some(log)) = (&report.network, &request_log) {
            eprintln!(
                "moat: network: {} requests, {} refused; log {}",
                n.requests,
                n.denied,
                log.display()
            );
        }
    }
    for line in &report.ended_by {
        eprintln!("moat: {line}");
    }
    let outcome = report.outcome;
    if let Outcome::NotStarted { message, .. } = &outcome {
        eprintln!("moat: {message}");
    }
    // A protected path that did not exist could not be mounted over; if the
    // command created it, the owner should look before the host runs it.
    for p in absent {
        if std::fs::symlink_metadata(&p).is_ok() {
            eprintln!(
                "moat: warning: the command created {} (a protected path that did not exist when the run started); review it before your tools use it",
                p.display()
            );
        }
    }
    if verbose {
        if let Outcome::Finished(s) = outcome {
            if libc::WIFSIGNALED(s) {
                eprintln!(
                    "moat: the command was killed by signal {}",
                    libc::WTERMSIG(s)
                );
            }
        }
    }
    outcome.exit_code()
}
