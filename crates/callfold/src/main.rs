//! The `callfold` executable: reads the command line and the environment, opens the store, and
//! wires the crates into the service asked for. No logic of its own beyond that wiring.

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use axum::routing::get;
use callfold_ingest::{CommitQueue, IngestState, LinkingRules, Verifier, WebhookSecrets};
use callfold_simulate::SimulateOptions;
use callfold_store::Store;
use clap::Parser;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, DatabaseArgs, ReceiverArgs, SimulateArgs};

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) | Command::Ingest(args) => run_receiver(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Simulate(args) => simulate(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn open_store(args: &DatabaseArgs) -> anyhow::Result<Store> {
    let store = Store::connect(&args.database_url)
        .await
        .context("cannot open the database given by --database-url / DATABASE_URL")?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    let store = open_store(&args).await?;
    tracing::info!(backend = store.backend_name(), "migrations applied");
    Ok(())
}

async fn run_receiver(args: ReceiverArgs) -> anyhow::Result<()> {
    let secrets = WebhookSecrets::from_env()?;
    let store = open_store(&args.database).await?;
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let (queue, committer) = CommitQueue::start(
        store.clone(),
        args.commit_queue as usize,
        args.commit_batch as usize,
    );
    let state = IngestState::new(
        Verifier::new(secrets, args.tolerance),
        LinkingRules::default(),
        queue,
        args.max_body,
    );
    let app = callfold_ingest::router(state).route(
        "/metrics",
        get(move || std::future::ready(metrics.render())),
    );

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, backend = store.backend_name(), "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // The router, and with it every queue handle, is gone: the committer drains and stops.
    committer.await.context("the committer task failed")?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler works on unix");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down: no new connections, finishing appends in flight");
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let secrets = WebhookSecrets::from_env()?;
    let secret = secrets
        .iter()
        .next()
        .context("at least one secret is configured")?;
    let options = SimulateOptions {
        url: args.url,
        calls: args.calls,
        concurrency: args.concurrency as usize,
        duplicates: args.duplicates,
        shuffle: args.shuffle,
        seed: args.seed,
    };
    let report = callfold_simulate::run(&options, secret).await;
    println!("{report}");
    Ok(())
}
