//! Many guests: one daemon serving N guests over hybrid vsock sockets, idle
//! and under concurrent scans.
//!
//! ```text
//! cargo bench --profile profiling --bench guests -- --guests 256 --clients 32 --requests 50000 --mode auto
//! ```
//!
//! The harness writes a daemon configuration (backend `simulated`, one
//! `[[guest]]` per VM with `hybrid_vsock = "<dir>/gN.sock"` and
//! `scan_min_latency_ms = 0`), starts a server process on it, waits until
//! every `<dir>/gN.sock_12345` exists, then:
//!
//! - idle: RSS (VmRSS and VmHWM from /proc/PID/status), threads, and
//!   wake-ups over `--idle-seconds` (voluntary + involuntary context
//!   switches summed over /proc/PID/task/*/status, then, separately,
//!   `strace -f -c -p PID` for the same time when strace is installed);
//! - load: `--clients` tasks in this process, each doing scans on a new
//!   connection per request (as the guest driver) over the guests' request
//!   sockets in turn, `--requests` in all: requests per second, p50, p99,
//!   max, context switches per request over all server threads, and RSS
//!   and threads afterwards.
//!
//! The server process is, with `--mode`:
//! - `daemon`: the release `proxy-wifi serve --config FILE` (with
//!   `--daemon-threads N`, `serve --threads N`);
//! - `library`: this very executable re-run with `--serve-library FILE`,
//!   which reads the same file with `DaemonConfig::load` and starts one
//!   `Service` per guest on one shared `SimulatedWifi`, on a current-thread
//!   runtime as the binary's (`--library-workers N`: multi-thread with N
//!   workers) with an info-level log to stderr, as the binary does;
//! - `auto` (default): `daemon` when `proxy-wifi serve --help` offers
//!   `--config`, else `library`;
//! - `both`: one after the other.
//!
//! The server's stderr (its log) goes to a file in the temporary directory.
//! Run by `cargo test --all-targets` (without cargo bench's `--bench`
//! argument) it does a smoke run: 4 guests, a few requests, a short idle.

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
mod imp {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use proxy_wifi::daemon::DaemonConfig;
    use proxy_wifi::handler::HandlerSettings;
    use proxy_wifi::protocol::{Message, Request, ScanLayout, ScanRequest};
    use proxy_wifi::service::Service;
    use proxy_wifi::wifi::simulated::SimulatedWifi;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::common::{status_field, ServerProcess, TaskFigures, Threads};

    type Error = Box<dyn std::error::Error + Send + Sync>;

    const REQUEST_PORT: u32 = 12345;
    /// The release binary cargo built with this benchmark.
    const BUILT_DAEMON: &str = env!("CARGO_BIN_EXE_proxy-wifi");

    /// The daemon binary: `--daemon-bin PATH` or `PROXY_WIFI_DAEMON`, else
    /// the one cargo built alongside this benchmark.
    fn daemon() -> PathBuf {
        let args: Vec<String> = std::env::args().collect();
        if let Some(i) = args.iter().position(|a| a == "--daemon-bin") {
            if let Some(path) = args.get(i + 1) {
                return PathBuf::from(path);
            }
        }
        std::env::var_os("PROXY_WIFI_DAEMON")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(BUILT_DAEMON))
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Mode {
        Daemon,
        Library,
    }

    impl Mode {
        fn describe(self) -> &'static str {
            match self {
                Mode::Daemon => "the daemon binary: proxy-wifi serve --config FILE",
                Mode::Library => {
                    "library setup: one Service per guest on one SimulatedWifi, in a child process"
                }
            }
        }
    }

    struct Options {
        guests: usize,
        clients: usize,
        requests: usize,
        idle: Duration,
        modes: Vec<Mode>,
        strace: bool,
        /// Worker threads of the library setup's runtime (1, the default:
        /// current-thread, as the binary; `None`: one per CPU).
        library_workers: Option<usize>,
        /// `serve --threads N` for the daemon (`None`: its default, 1).
        daemon_threads: Option<usize>,
        smoke: bool,
    }

    fn daemon_has_config() -> bool {
        Command::new(daemon())
            .args(["serve", "--help"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("--config"))
            .unwrap_or(false)
    }

    fn parse_args(args: &[String]) -> Result<Options, Error> {
        let smoke = !args.iter().any(|a| a == "--bench");
        let mut options = Options {
            guests: if smoke { 4 } else { 256 },
            clients: if smoke { 2 } else { 32 },
            requests: if smoke { 40 } else { 50_000 },
            idle: if smoke {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(10)
            },
            modes: Vec::new(),
            strace: !smoke,
            // As the proxy-wifi binary (src/cli/mod.rs).
            library_workers: Some(1),
            daemon_threads: None,
            smoke,
        };
        let mut mode = "auto".to_string();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || -> Result<String, Error> {
                Ok(it
                    .next()
                    .ok_or_else(|| format!("{arg} needs a value"))?
                    .clone())
            };
            match arg.as_str() {
                "--guests" => options.guests = value()?.parse::<usize>()?.max(1),
                "--clients" => options.clients = value()?.parse::<usize>()?.max(1),
                "--requests" => options.requests = value()?.parse()?,
                "--idle-seconds" => options.idle = Duration::from_secs_f64(value()?.parse()?),
                "--mode" => mode = value()?,
                "--daemon-bin" => {
                    value()?;
                }
                "--no-strace" => options.strace = false,
                "--library-workers" => options.library_workers = Some(value()?.parse()?),
                "--daemon-threads" => options.daemon_threads = Some(value()?.parse()?),
                "--help" | "-h" => {
                    println!(
                        "cargo bench --profile profiling --bench guests -- [--guests N] [--clients N] [--requests N] \
                         [--idle-seconds S] [--mode auto|daemon|library|both] [--daemon-bin PATH] [--daemon-threads N] [--library-workers N] [--no-strace]"
                    );
                    std::process::exit(0);
                }
                _ => {}
            }
        }
        options.modes = match mode.as_str() {
            "daemon" => vec![Mode::Daemon],
            "library" => vec![Mode::Library],
            "both" => vec![Mode::Daemon, Mode::Library],
            "auto" => {
                if daemon_has_config() {
                    vec![Mode::Daemon]
                } else {
                    println!(
                        "NOTE: {} has no `serve --config` yet (the multi-guest daemon is \
                         not merged); measuring the equivalent library setup instead",
                        daemon().display()
                    );
                    vec![Mode::Library]
                }
            }
            other => return Err(format!("--mode auto|daemon|library|both, not {other}").into()),
        };
        if options.modes.contains(&Mode::Daemon) && !daemon_has_config() {
            return Err(format!(
                "{} has no `serve --config`; use --mode library",
                daemon().display()
            )
            .into());
        }
        Ok(options)
    }

    fn socket_base(dir: &Path, i: usize) -> PathBuf {
        dir.join(format!("g{i}.sock"))
    }

    fn request_socket(dir: &Path, i: usize) -> PathBuf {
        dir.join(format!("g{i}.sock_{REQUEST_PORT}"))
    }

    /// The daemon configuration for `guests` hybrid-vsock guests.
    fn write_config(dir: &Path, guests: usize) -> Result<PathBuf, Error> {
        let mut text = String::from(
            "# Generated by benches/guests.rs\nbackend = \"simulated\"\nlog_level = \"info\"\n",
        );
        for i in 0..guests {
            text.push_str(&format!(
                "\n[[guest]]\nname = \"vm{i}\"\nhybrid_vsock = \"{}\"\nscan_min_latency_ms = 0\n",
                socket_base(dir, i).display()
            ));
        }
        let path = dir.join("daemon.toml");
        std::fs::write(&path, text)?;
        // The library's own checker must accept what the daemon will read.
        DaemonConfig::load(&path)?;
        Ok(path)
    }

    /// `--serve-library FILE`: the library equivalent of the daemon.
    fn serve_library(config: &Path, workers: Option<usize>) -> Result<(), Error> {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
        let config = DaemonConfig::load(config)?;
        // One worker: a current-thread runtime, as the binary.
        let runtime = match workers {
            Some(1) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            Some(n) => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .enable_all()
                .build()?,
            None => tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?,
        };
        runtime.block_on(async move {
            let wifi = SimulatedWifi::reference();
            let mut services = Vec::new();
            for guest in &config.guests {
                let defaults = HandlerSettings::default();
                let settings = HandlerSettings {
                    scan_layout: guest.scan_layout,
                    scan_min_latency: guest.scan_min_latency.unwrap_or(defaults.scan_min_latency),
                    notify_guest_on_host_disconnect: guest.notify_host_disconnect,
                    ..defaults
                };
                let service = Service::builder(guest.transport.clone(), wifi.clone())
                    .settings(settings)
                    .build();
                service.start().await?;
                services.push(service);
            }
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            term.recv().await;
            for service in &services {
                service.stop().await;
            }
            Result::<(), Error>::Ok(())
        })
    }

    /// The server process, stopped with SIGTERM (then killed) when dropped.
    struct Server {
        process: ServerProcess,
    }

    impl Server {
        fn start(
            mode: Mode,
            config: &Path,
            log: &Path,
            library_workers: Option<usize>,
            daemon_threads: Option<usize>,
        ) -> Result<Server, Error> {
            let mut command = match mode {
                Mode::Daemon => {
                    let mut c = Command::new(daemon());
                    c.arg("serve").arg("--config").arg(config);
                    if let Some(n) = daemon_threads {
                        c.arg("--threads").arg(n.to_string());
                    }
                    c
                }
                Mode::Library => {
                    let mut c = Command::new(std::env::current_exe()?);
                    c.arg("--serve-library").arg(config);
                    if let Some(n) = library_workers {
                        c.arg("--library-workers").arg(n.to_string());
                    }
                    c
                }
            };
            let child = command
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log)?)
                .spawn()?;
            Ok(Server {
                process: ServerProcess { child },
            })
        }

        fn pid(&self) -> u32 {
            self.process.pid()
        }

        fn check_alive(&mut self) -> Result<(), Error> {
            match self.process.child.try_wait()? {
                Some(status) => Err(format!("the server exited: {status}").into()),
                None => Ok(()),
            }
        }
    }

    /// Voluntary and involuntary context switches and CPU time summed
    /// over all threads.
    fn context_switches(pid: u32) -> TaskFigures {
        Threads::Process(pid).figures()
    }

    struct Memory {
        rss_kib: u64,
        hwm_kib: u64,
        threads: u64,
    }

    fn memory(pid: u32) -> Memory {
        Memory {
            rss_kib: status_field(pid, "VmRSS").unwrap_or(0),
            hwm_kib: status_field(pid, "VmHWM").unwrap_or(0),
            threads: status_field(pid, "Threads").unwrap_or(0),
        }
    }

    fn mib(kib: u64) -> f64 {
        kib as f64 / 1024.0
    }

    /// `strace -f -c -p PID` for `period`: total syscalls and the summary.
    fn strace_idle(pid: u32, period: Duration, out: &Path) -> Result<(u64, String), Error> {
        let mut strace = Command::new("strace")
            .args(["-f", "-c", "-o"])
            .arg(out)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(out.with_extension("err"))?)
            .spawn()?;
        // strace needs a moment to attach to every thread.
        std::thread::sleep(Duration::from_millis(300));
        std::thread::sleep(period);
        if let Ok(spid) = i32::try_from(strace.id()) {
            // SAFETY: kill(2) on the pid of our own child strace.
            unsafe {
                libc::kill(spid, libc::SIGINT);
            }
        }
        let status = strace.wait()?;
        let summary = std::fs::read_to_string(out).unwrap_or_default();
        if summary.trim().is_empty() {
            // strace -c prints no table when nothing completed a syscall;
            // that is only a zero if it did attach.
            let log = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
            if log.contains("attached") {
                return Ok((0, String::new()));
            }
            return Err(format!("strace did not attach ({status}): {}", log.trim()).into());
        }
        // The total line: "100.00 ... <calls> [errors] total".
        let calls = summary
            .lines()
            .find(|l| l.trim_end().ends_with("total"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok((calls, summary))
    }

    async fn wait_for_sockets(
        dir: &Path,
        guests: usize,
        server: &mut Server,
    ) -> Result<Duration, Error> {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(60);
        let mut next = 0;
        while next < guests {
            if request_socket(dir, next).exists() {
                next += 1;
                continue;
            }
            server.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!("only {next} of {guests} request sockets after 60 s").into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(start.elapsed())
    }

    async fn scan_once(path: &Path, request: &[u8]) -> Result<usize, Error> {
        let mut s = tokio::net::UnixStream::connect(path).await?;
        s.write_all(request).await?;
        let mut reply = Vec::with_capacity(256);
        s.read_to_end(&mut reply).await?;
        match Message::decode(&reply, ScanLayout::Current)? {
            Message::ScanResponse(r) => Ok(r.bss.len()),
            other => Err(format!("a scan got {:?}", other.operation()).into()),
        }
    }

    struct Load {
        elapsed: Duration,
        latencies_ns: Vec<u64>,
        errors: usize,
    }

    /// `clients` tasks share `requests` scans; client c asks guests c,
    /// c + clients, c + 2 clients, ... in turn.
    async fn drive(
        dir: &Path,
        guests: usize,
        clients: usize,
        requests: usize,
    ) -> Result<Load, Error> {
        let request = Arc::new(Request::Scan(ScanRequest::default()).encode()?);
        let paths: Arc<Vec<PathBuf>> =
            Arc::new((0..guests).map(|i| request_socket(dir, i)).collect());
        let issued = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (request, paths, issued) = (request.clone(), paths.clone(), issued.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                let mut guest = c % paths.len();
                while issued.fetch_add(1, Ordering::Relaxed) < requests {
                    let t = Instant::now();
                    match scan_once(&paths[guest], &request).await {
                        Ok(_) => latencies.push(t.elapsed().as_nanos() as u64),
                        Err(e) => {
                            if errors == 0 {
                                eprintln!("client {c}: {e}");
                            }
                            errors += 1;
                        }
                    }
                    guest = (guest + clients) % paths.len();
                }
                (latencies, errors)
            }));
        }
        let mut load = Load {
            elapsed: Duration::ZERO,
            latencies_ns: Vec::with_capacity(requests),
            errors: 0,
        };
        for task in tasks {
            let (latencies, errors) = task.await?;
            load.latencies_ns.extend(latencies);
            load.errors += errors;
        }
        load.elapsed = start.elapsed();
        load.latencies_ns.sort_unstable();
        Ok(load)
    }

    fn percentile_us(sorted: &[u64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
    }

    async fn measure(mode: Mode, options: &Options) -> Result<(), Error> {
        let dir = tempfile::tempdir()?;
        let config = write_config(dir.path(), options.guests)?;
        let log = dir.path().join("server.log");
        let mut server = Server::start(
            mode,
            &config,
            &log,
            options.library_workers,
            options.daemon_threads,
        )?;
        let pid = server.pid();
        let ready = wait_for_sockets(dir.path(), options.guests, &mut server).await?;
        // One scan per guest first: every guest then has a live session,
        // as VMs that have booted would.
        let request = Request::Scan(ScanRequest::default()).encode()?;
        for i in 0..options.guests {
            scan_once(&request_socket(dir.path(), i), &request).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.check_alive()?;

        println!();
        match mode {
            Mode::Daemon => println!(
                "== {} (pid {pid}, {}, threads: {})",
                mode.describe(),
                daemon().display(),
                options
                    .daemon_threads
                    .map_or("default".to_string(), |n| n.to_string())
            ),
            Mode::Library => println!(
                "== {} (pid {pid}, runtime workers: {})",
                mode.describe(),
                options
                    .library_workers
                    .map_or("one per CPU".to_string(), |n| match n {
                        1 => "1, current-thread".to_string(),
                        n => n.to_string(),
                    })
            ),
        }
        println!(
            "{} guests on hybrid vsock sockets ready {:.0} ms after start",
            options.guests,
            ready.as_secs_f64() * 1000.0
        );
        let idle_mem = memory(pid);
        println!(
            "idle:   VmRSS {:.1} MiB, VmHWM {:.1} MiB, {} threads ({:.1} KiB RSS per guest)",
            mib(idle_mem.rss_kib),
            mib(idle_mem.hwm_kib),
            idle_mem.threads,
            idle_mem.rss_kib as f64 / options.guests as f64
        );

        let before = context_switches(pid);
        tokio::time::sleep(options.idle).await;
        let after = context_switches(pid);
        println!(
            "idle:   {} voluntary + {} involuntary context switches in {:.1} s (all threads)",
            after.voluntary.saturating_sub(before.voluntary),
            after.involuntary.saturating_sub(before.involuntary),
            options.idle.as_secs_f64()
        );
        if options.strace {
            let out = dir.path().join("strace.txt");
            let (idle, pid_copy) = (options.idle, pid);
            let out_copy = out.clone();
            match tokio::task::spawn_blocking(move || strace_idle(pid_copy, idle, &out_copy))
                .await?
            {
                Ok((calls, summary)) => {
                    println!(
                        "idle:   {calls} syscalls in {:.1} s under strace -f -c -p {pid}",
                        idle.as_secs_f64()
                    );
                    if calls > 0 {
                        for line in summary.lines() {
                            println!("        | {line}");
                        }
                    }
                }
                Err(e) => println!("idle:   strace SKIPPED: {e}"),
            }
        } else {
            println!("idle:   strace SKIPPED (smoke run or --no-strace)");
        }

        let switches_before_load = context_switches(pid);
        let load = drive(
            dir.path(),
            options.guests,
            options.clients,
            options.requests,
        )
        .await?;
        server.check_alive()?;
        let switches_after_load = context_switches(pid);
        let loaded_mem = memory(pid);
        let done = load.latencies_ns.len();
        println!(
            "load:   {} scans from {} concurrent clients over {} guests in {:.2} s: {:.0} req/s, \
             p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs, {} errors",
            done,
            options.clients,
            options.guests,
            load.elapsed.as_secs_f64(),
            done as f64 / load.elapsed.as_secs_f64(),
            percentile_us(&load.latencies_ns, 50.0),
            percentile_us(&load.latencies_ns, 99.0),
            percentile_us(&load.latencies_ns, 100.0),
            load.errors
        );
        println!(
            "load:   VmRSS {:.1} MiB, VmHWM {:.1} MiB, {} threads afterwards",
            mib(loaded_mem.rss_kib),
            mib(loaded_mem.hwm_kib),
            loaded_mem.threads
        );
        let per_request =
            |after: u64, before: u64| after.saturating_sub(before) as f64 / done.max(1) as f64;
        println!(
            "load:   {:.2} voluntary + {:.2} involuntary context switches per request (all server threads)",
            per_request(switches_after_load.voluntary, switches_before_load.voluntary),
            per_request(switches_after_load.involuntary, switches_before_load.involuntary)
        );
        println!(
            "load:   {:.1} µs of CPU per request (all server threads, user and kernel)",
            switches_after_load.per(&switches_before_load, done).1
        );
        let log_size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        println!("server log: {log_size} bytes (info level)");
        drop(server);
        if load.errors > 0 {
            return Err(format!("{} requests failed", load.errors).into());
        }
        Ok(())
    }

    pub fn main() -> Result<(), Error> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if let Some(i) = args.iter().position(|a| a == "--serve-library") {
            let path = args.get(i + 1).ok_or("--serve-library FILE")?;
            let workers = match args.iter().position(|a| a == "--library-workers") {
                Some(w) => Some(args.get(w + 1).ok_or("--library-workers N")?.parse()?),
                None => None,
            };
            return serve_library(Path::new(path), workers);
        }
        let options = parse_args(&args)?;
        println!("proxy-wifi with many guests: idle cost and concurrent scans");
        println!(
            "scan min latency 0 (the product's default 150 ms exists for iw); backend simulated \
             (3 networks); client: {} tokio tasks in the harness process, a new connection per request",
            options.clients
        );
        if options.smoke {
            println!("(smoke run: not invoked by cargo bench; numbers are meaningless)");
        }
        // The client side: its own runtime, in this process.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        for mode in options.modes.clone() {
            runtime.block_on(measure(mode, &options))?;
        }
        Ok(())
    }
}

fn main() {
    #[cfg(target_os = "linux")]
    if let Err(e) = imp::main() {
        eprintln!("guests benchmark failed: {e}");
        std::process::exit(1);
    }
    #[cfg(not(target_os = "linux"))]
    eprintln!("SKIPPED: the many-guests benchmark runs on Linux only (hybrid vsock, /proc)");
}
