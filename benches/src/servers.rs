//! The processes under test: starting them pinned to a core, waiting until they listen,
//! reading their memory, CPU time and storage writes, and the ceiling server itself.
//!
//! The benchmark process pins itself to core 0 and every server to core 1 (when the machine
//! has two cores or more), so that the load generator and the server do not compete; a
//! rebuild running alone gets every core, as one started by hand does. Each process's cores
//! are checked once it runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// The demo secret every benchmark server accepts and every request is signed with.
pub const BENCH_SECRET: &str = "whsec_ZGVtby1zZWNyZXQtY2hhbmdlLW1l";

/// The cores of the machine. Counted once, the first time it is asked, which
/// [`pin_this_process`] does before it pins: the count the standard library gives follows the
/// asking thread's affinity, so that afterwards it would be 1.
pub fn machine_cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The core the servers run on, when the machine has a second one.
fn server_core() -> Option<usize> {
    (machine_cores() >= 2).then_some(1)
}

/// Pins this process (before it starts any thread) to core 0, if servers get a core of
/// their own. Returns whether it did.
pub fn pin_this_process() -> bool {
    if server_core().is_none() {
        return false;
    }
    std::process::Command::new("taskset")
        .args(["-p", "-c", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Where a process under test runs.
#[derive(Clone, Copy, Debug)]
pub enum Placement {
    /// On the servers' core alone, away from the load generator.
    ServerCore,
    /// On every core of the machine, as a command started by hand runs (rather than on this
    /// process's core, which it would inherit).
    EveryCore,
}

impl Placement {
    /// The cores, as `taskset -c` lists them; `None` on a machine of one core.
    fn cores(self) -> Option<String> {
        let server = server_core()?;
        Some(match self {
            Self::ServerCore => server.to_string(),
            Self::EveryCore => format!("0-{}", machine_cores() - 1),
        })
    }

    /// A command that runs `program` here (plainly on a machine of one core, or without
    /// `taskset`).
    pub fn command(self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self.cores() {
            Some(cores) => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(cores).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// Fails unless process `pid` runs here, so that no figure is printed for a process that
    /// ran elsewhere (beside the load generator, say).
    pub fn ensure_holds_for(self, pid: u32) -> anyhow::Result<()> {
        let Some(cores) = self.cores() else {
            return Ok(());
        };
        let allowed = status_field(pid, "Cpus_allowed_list")?;
        anyhow::ensure!(
            allowed == cores,
            "process {pid} under test runs on cores {allowed:?}, not on {cores:?}"
        );
        Ok(())
    }
}

/// A command that runs `program` pinned to the servers' core (plainly without `taskset`).
pub fn pinned(program: impl AsRef<std::ffi::OsStr>) -> Command {
    Placement::ServerCore.command(program)
}

/// A free loopback port, found by binding port 0 and letting go.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A server process under test.
pub struct Server {
    /// The child; killed when dropped.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
}

impl Server {
    /// Starts `command` (which must listen on `port`) and waits until it accepts connections.
    pub async fn start(mut command: Command, port: u16) -> anyhow::Result<Self> {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a server under test")?;
        let mut server = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(addr).await.is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("a server under test exited before listening: {status}");
            }
            if Instant::now() > deadline {
                bail!("a server under test never listened on {addr}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Placement::ServerCore.ensure_holds_for(server.child.id().unwrap_or_default())?;
        Ok(server)
    }

    /// The webhook endpoint.
    pub fn webhook_url(&self) -> String {
        format!("{}{}", self.base_url, callfold_ingest::WEBHOOK_PATH)
    }

    /// The highest resident set size of the process so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.child.id().map_or(0.0, peak_rss_mib_of)
    }

    /// The CPU time and storage writes of the process so far.
    pub fn counters(&self) -> ProcessCounters {
        self.child
            .id()
            .map_or_else(ProcessCounters::default, counters_of)
    }
}

/// What a process has used so far, from `/proc/PID/stat` and `/proc/PID/io`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessCounters {
    /// User plus system CPU time of all its threads, in seconds.
    pub cpu_seconds: f64,
    /// Bytes it caused to be written to storage (`write_bytes`: page-cache pages it dirtied).
    pub write_bytes: u64,
}

impl ProcessCounters {
    /// What was used between `earlier` and these counters.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            cpu_seconds: self.cpu_seconds - earlier.cpu_seconds,
            write_bytes: self.write_bytes.saturating_sub(earlier.write_bytes),
        }
    }
}

/// Clock ticks per second, the unit of `/proc/PID/stat`'s CPU times (`getconf CLK_TCK`).
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The counters of process `pid`; zeros for what cannot be read.
pub fn counters_of(pid: u32) -> ProcessCounters {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start at the state, field 3;
    // utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |field: usize| {
        fields
            .get(field - 3)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_default()
    };
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let write_bytes = io
        .lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_default();
    ProcessCounters {
        cpu_seconds: (ticks(14) + ticks(15)) / clock_ticks_per_second(),
        write_bytes,
    }
}

/// The value of `field` in `/proc/PID/status` of process `pid`, trimmed.
pub fn status_field(pid: u32, field: &str) -> anyhow::Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.trim().to_owned())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// A size in `/proc/PID/status` of process `pid` (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let value = status_field(pid, field)?;
    value
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{field} of process {pid} is not a size in kB: {value:?}"))
}

/// `VmHWM` of process `pid` (its peak resident set size), in MiB; 0 if unreadable. Under
/// `taskset`, the process is taskset's only child, which `exec`s: the same pid.
pub fn peak_rss_mib_of(pid: u32) -> f64 {
    status_kib(pid, "VmHWM").map_or(0.0, |kib| kib / 1024.0)
}

/// `target/release/callfold`, next to this benchmark's own executable.
pub fn callfold_executable() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("callfold");
    if !path.exists() {
        bail!(
            "{} is missing: build it first (cargo build --release -p callfold)",
            path.display()
        );
    }
    Ok(path)
}

/// `callfold serve` on `database_url`, pinned, with the benchmark secret.
pub async fn start_callfold(
    database_url: &str,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<Server> {
    start_callfold_command("serve", database_url, extra_env).await
}

/// `callfold <subcommand>` (`serve`, `ingest` or `projector`) on `database_url`, pinned, with
/// the benchmark secret.
pub async fn start_callfold_command(
    subcommand: &str,
    database_url: &str,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let mut command = pinned(callfold_executable()?);
    command
        .args([subcommand, "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", database_url])
        .env("CALLFOLD_WEBHOOK_SECRETS", BENCH_SECRET)
        .env("RUST_LOG", "warn")
        .envs(extra_env.iter().copied());
    Server::start(command, port).await
}

/// A bench-only server, `callfold-bench <subcommand> --port PORT <args>`, pinned.
async fn start_bench_server(subcommand: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<Server> {
    let port = free_port()?;
    let mut command = pinned(std::env::current_exe()?);
    command
        .args([subcommand, "--port", &port.to_string()])
        .args(args);
    Server::start(command, port).await
}

/// The ceiling: `callfold-bench ceiling-server`.
pub async fn start_ceiling() -> anyhow::Result<Server> {
    start_bench_server("ceiling-server", &[]).await
}

/// The verify rung: `callfold-bench verify-server`.
pub async fn start_verify() -> anyhow::Result<Server> {
    start_bench_server("verify-server", &[]).await
}

/// The group-commit rung on the SQLite database at `path`: `callfold-bench
/// group-commit-server`.
pub async fn start_group_commit(path: &Path) -> anyhow::Result<Server> {
    start_bench_server(
        "group-commit-server",
        &["--database".as_ref(), path.as_os_str()],
    )
    .await
}

/// The hand-written Express peer in `benches/peers/allo-express`, pinned; installs its
/// packages with `npm ci` on first use. `None` when Node.js is not installed.
pub async fn start_peer(data_dir: &Path) -> anyhow::Result<Option<Server>> {
    let peer_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/allo-express");
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        return Ok(None);
    }
    if !peer_dir.join("node_modules").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&peer_dir)
            .stdout(Stdio::null())
            .status()
            .await
            .context("npm ci for the peer")?;
        if !status.success() {
            bail!("npm ci failed in {}", peer_dir.display());
        }
    }
    let port = free_port()?;
    let mut command = pinned("node");
    command
        .arg(peer_dir.join("server.js"))
        .env("PORT", port.to_string())
        .env("DB_PATH", data_dir.join("peer.db"))
        .env("WEBHOOK_SECRET", BENCH_SECRET);
    Server::start(command, port).await.map(Some)
}

/// Serves the ceiling: 200 to every webhook POST, after reading its body, and nothing else.
pub async fn serve_ceiling(port: u16) -> anyhow::Result<()> {
    async fn answer(_body: Bytes) {}
    let app = Router::new().route(callfold_ingest::WEBHOOK_PATH, post(answer));
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
