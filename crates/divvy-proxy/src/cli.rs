//! The command line: arguments, `--check`, the embedded demo, the runtime, signals.
//!
//! Both the `divvy-proxy` binary and `cargo run --example proxy` are [`run`] over the process
//! arguments:
//!
//! ```text
//! cargo run --example proxy                                  # embedded demo: 3 backends + proxy
//! cargo run --example proxy -- --config proxy.toml           # a real config
//! cargo run --example proxy -- --config proxy.toml --check   # validate, like `nginx -t`
//! cargo run --release --example proxy -- --config proxy.toml --threads 1
//! ```
//!
//! Signals: SIGHUP reloads the config (an invalid one is logged and the old one keeps serving);
//! SIGINT / SIGTERM stop accepting and drain in-flight requests. See `docs/PROXY.md` for every
//! config field and `examples/proxy.toml` for an annotated sample.

use std::path::PathBuf;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::{config, demo, server};

const USAGE: &str = "usage: proxy [--config FILE] [--check] [--threads N]

  (no arguments)   run the embedded demo: three local backends behind the proxy
  --config FILE    run FILE (TOML; see docs/PROXY.md)
  --check, -t      check FILE and exit: prints `ok`, or every error with file:line:column
  --threads N      worker threads (1 = a single-threaded runtime); default: one per core
";

struct Args {
    config: Option<PathBuf>,
    check: bool,
    threads: Option<usize>,
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        config: None,
        check: false,
        threads: None,
    };
    let mut it = argv.into_iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-c" => {
                args.config = Some(it.next().ok_or("--config needs a file")?.into());
            }
            "--check" | "-t" => args.check = true,
            "--threads" => {
                let n = it.next().ok_or("--threads needs a number")?;
                match n.parse::<usize>() {
                    Ok(n) if n >= 1 => args.threads = Some(n),
                    _ => return Err(format!("--threads: `{n}` is not a positive number")),
                }
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.check && args.config.is_none() {
        return Err("--check needs --config FILE".into());
    }
    Ok(args)
}

/// Runs the proxy as the command line `argv` asks (`argv[0]` is the program name): prints the
/// usage, checks a config, or serves (a config file, or the embedded demo with no arguments)
/// until SIGINT or SIGTERM. Returns the process's exit code: 2 for bad arguments, 1 for an
/// invalid config or a failure to start.
pub fn run(argv: impl IntoIterator<Item = String>) -> ExitCode {
    let args = match parse_args(argv) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("proxy: {e}");
            }
            eprint!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };

    // Load (and with --check, only check) before starting anything.
    let config = match &args.config {
        Some(path) => match config::load(path) {
            Ok(c) => Some(c),
            Err(diags) => {
                for d in &diags {
                    eprintln!("{d}");
                }
                eprintln!(
                    "{}: {} error{}",
                    path.display(),
                    diags.len(),
                    if diags.len() == 1 { "" } else { "s" }
                );
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    if args.check {
        println!("ok");
        return ExitCode::SUCCESS;
    }

    // Logs go to stderr (stdout carries the addresses), in colour only on a terminal.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let runtime = match args.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, args.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Option<config::Config>, path: Option<PathBuf>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let demo = config.is_none();
    let config = match config {
        Some(c) => c,
        None => demo::setup().await?,
    };
    let running = server::start(config).await?;
    for addr in &running.listen {
        println!("proxy listening on http://{addr}");
    }
    if let Some(addr) = running.admin {
        println!("admin on http://{addr}/status and http://{addr}/metrics");
    }
    if demo {
        let table = running.proxy.table.load();
        for u in &table.upstreams {
            for b in u.lb.backends().iter() {
                println!("demo backend {} in upstream `{}`", b.id(), u.name());
            }
        }
        println!(
            "try: for i in 1 2 3 4; do curl -s http://{}/; done",
            running.listen[0]
        );
    }

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => match &path {
                None => tracing::warn!("SIGHUP: the demo has no config file to reload"),
                Some(p) => match running.reload_file(p) {
                    Ok(()) => tracing::info!(config = %p.display(), "reloaded"),
                    Err(e) => {
                        for line in e.lines() {
                            tracing::error!("{line}");
                        }
                        tracing::error!("reload refused; the old config keeps serving");
                    }
                },
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await;
    Ok(())
}
