//! `jwks-server`: turn core dumps off, parse the configuration, start logging,
//! then either serve until SIGINT/SIGTERM or run an operator subcommand.
//!
//! Nothing here panics when stdout or stderr cannot be written (a full disk, a
//! closed pipe): an operator command whose output is lost exits 1.

use std::{io::Write, process::ExitCode};

use clap::Parser;
use jwks_server::{
    admin,
    config::{Cli, Command},
    probe, process,
    startup::{Application, StartupError},
    telemetry,
};

/// mimalloc instead of glibc's malloc: a token request allocates and frees a
/// few dozen small buffers (HTTP/2 frames, headers, claims JSON), and glibc's
/// bins were 7% of the instructions of an ES256 request (callgrind).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Before anything reads a KEK (the environment, a file) or unseals a key.
    if let Err(err) = process::forbid_core_dumps() {
        let _ = writeln!(
            std::io::stderr(),
            "jwks-server: cannot turn core dumps off: {err}"
        );
        return ExitCode::FAILURE;
    }
    process::prefer_small_pages();
    let cli = Cli::parse();
    // Settings that break a rule between them are a usage error, like a bad
    // flag: one line, exit 2, before anything is logged or opened.
    if !matches!(cli.command, Some(Command::HashSecret))
        && let Err(err) = cli.config.check()
    {
        let _ = writeln!(std::io::stderr(), "error: {}", StartupError::from(err));
        return ExitCode::from(2);
    }
    // The probe is a client with its own exit statuses (0 as expected, 1 the
    // verifier failed, 2 it could not run) and its own output: no log lines.
    if let Some(Command::Probe(args)) = &cli.command {
        return probe::main(args).await;
    }
    telemetry::init(cli.config.log_format);
    let result = match &cli.command {
        None | Some(Command::Serve) => {
            let shutdown = shutdown_signal();
            match Application::build(cli.config.clone()).await {
                Ok(app) => app.run(shutdown).await.map(|()| true),
                Err(err) => Err(err),
            }
        }
        Some(Command::Keys { action }) => admin::run(&cli.config, action)
            .await
            .map(|out| print_out(format_args!("{out}"))),
        Some(Command::HashSecret) => {
            admin::hash_secret_from_stdin().map(|out| print_out(format_args!("{out}\n")))
        }
        Some(Command::Probe(_)) => Ok(false), // ran above
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // Reported once, on stderr, whatever the log format: the one line
        // operators and scripts look for. A failed write loses it, never panics.
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "jwks-server: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Prints an operator command's output; `false` when it could not be written
/// (`print!` would panic).
fn print_out(out: std::fmt::Arguments<'_>) -> bool {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(out).and_then(|()| stdout.flush()) {
        Ok(()) => true,
        Err(err) => {
            tracing::error!(error = %err, "cannot write the output");
            false
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed when
/// this is called, not when it is first awaited: called before the listeners
/// open, a signal that arrives while the server starts (a deploy that stops
/// it at once) asks it to stop instead of killing it.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for {name}");
                None
            }
        };
        let interrupt = listen(SignalKind::interrupt(), "SIGINT");
        let terminate = listen(SignalKind::terminate(), "SIGTERM");
        async move {
            let wait = |stream: Option<tokio::signal::unix::Signal>| async move {
                match stream {
                    Some(mut stream) => {
                        stream.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => {},
                () = wait(terminate) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
