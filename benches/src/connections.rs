//! `callfold-bench connections`: what an idle connection costs `callfold serve` in memory,
//! silent (accepted, not a byte sent) and kept alive after one answered request, so that
//! `--max-connections` can be sized to a memory budget (`docs/deployment.md`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::servers::{Server, start_callfold, status_kib};

/// Waits until the server reports at least `count` open connections.
async fn wait_until_open(
    server: &Server,
    client: &reqwest::Client,
    count: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let metrics = client
            .get(format!("{}/metrics", server.base_url))
            .send()
            .await?
            .text()
            .await?;
        let open = metrics
            .lines()
            .find_map(|line| line.strip_prefix("callfold_connections_open "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if open >= count as f64 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the server holds {open} connections, not {count}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `count` idle connections to `callfold serve` on SQLite and prints what they cost.
pub async fn measure(count: usize, scratch: &Path) -> anyhow::Result<()> {
    let url = format!("sqlite:{}", scratch.join("connections.db").display());
    let cap = (count + 16).to_string();
    let env = [
        ("CALLFOLD_MAX_CONNECTIONS", cap.as_str()),
        // Nothing closes the idle connections while they are measured.
        ("CALLFOLD_FIRST_BYTE_TIMEOUT_MS", "3600000"),
        ("CALLFOLD_HEADER_READ_TIMEOUT_MS", "3600000"),
        ("CALLFOLD_KEEP_ALIVE_TIMEOUT_MS", "3600000"),
    ];
    let server = start_callfold(&url, &env).await?;
    let pid = server.child.id().context("the server runs")?;
    let authority = server.base_url.trim_start_matches("http://").to_owned();
    // One kept-alive connection of its own for the metrics, opened before the baseline.
    let client = reqwest::Client::new();
    wait_until_open(&server, &client, 1).await?;
    let baseline = status_kib(pid, "VmRSS")?;

    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        let connection = TcpStream::connect(&authority).await;
        connections.push(connection.context("connect (raise `ulimit -n` above the count)")?);
    }
    wait_until_open(&server, &client, count + 1).await?;
    let silent = status_kib(pid, "VmRSS")?;

    for connection in &mut connections {
        connection
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: bench\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        while !answer.ends_with(b"\"ok\"}") {
            let mut chunk = [0u8; 1024];
            let read = connection.read(&mut chunk).await?;
            if read == 0 {
                bail!("the server closed a connection it had answered");
            }
            answer.extend_from_slice(&chunk[..read]);
        }
    }
    let kept_alive = status_kib(pid, "VmRSS")?;

    println!("## Idle connections: {count} on `callfold serve` (SQLite)\n");
    println!("| connections | RSS MiB | KiB per connection |");
    println!("|---|---|---|");
    println!("| none (baseline) | {:.1} | |", baseline / 1024.0);
    for (name, rss) in [
        ("silent: accepted, no byte sent", silent),
        ("kept alive after one request", kept_alive),
    ] {
        let each = (rss - baseline) / count as f64;
        println!("| {name} | {:.1} | {each:.1} |", rss / 1024.0);
    }
    println!();
    Ok(())
}
