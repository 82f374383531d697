//! End-to-end request latency against the physical floor, in one run.
//!
//! ```text
//! cargo bench --profile profiling --bench e2e -- --headline     # the headline (scripts/bench.sh e2e-headline)
//! cargo bench --profile profiling --bench e2e -- --requests 20000 --placement free,same,split
//! ```
//!
//! Does what the guest driver does, a new connection per request (connect,
//! write the request, read the reply until the host closes), against
//! (a) proxy-wifi's `Service` in simulated mode and (b) a floor server with
//! the same framing that does no work: it accepts through the product's
//! own transports (`TransportConfig::bind_host`, so on Linux neither server
//! registers a connection with the reactor unless it has to wait), reads
//! the request frame (with the proxy's own `read_request`), writes
//! a pre-encoded reply captured from proxy-wifi for that operation (same
//! bytes, same size) and closes. Over TCP loopback and over Unix sockets
//! (hybrid vsock: the guest side connects to `<uds>_<port>`).
//!
//! Fairness: both servers run in this process, each on its own tokio
//! runtime built the same way (by default current-thread on a thread of
//! its own, like the `proxy-wifi` binary; `--runtime multi` for a
//! multi-thread runtime with one worker, the binary's before,
//! `--runtime multiN` for N workers), both serve a connection in the
//! accept loop's poll when it needs no wait and on a task of its own
//! otherwise, and set TCP_NODELAY (in the transport); one client thread
//! with blocking std sockets and the same code drives both. After a
//! warm-up, blocks of requests alternate between proxy and floor (which
//! goes first alternates too), so drift and other load on the machine hit
//! both alike.
//!
//! `--headline`: how users run it, threads unpinned; `disconnect`
//! requests, 5,000 per server and transport in blocks of 1,000, five runs
//! (`--runs N`); per run the p50s, their ratio, the load average and the
//! server threads' context switches per request (a count, which load
//! disturbs far less than a time: one per request is a single wakeup);
//! then the medians over the runs, the p50s by wakeup pattern, and the
//! server threads after start and after load. Then the same measurement
//! of the floor against a second floor process (`--no-calibration` leaves
//! it out): what ratio two identical servers show is the measurement's
//! own spread.
//!
//! Why blocks of 1,000 (about 60 ms of requests), not 100: the scheduler
//! tracks each task's and CPU's load with a decay half-life of about 32
//! ms, so with blocks of 6 ms the two servers are placed as a pair. On a
//! 2-CPU VM the lighter one then wins the client's CPU (about 15 µs
//! faster per request over Unix sockets) and the heavier one is left on
//! the other. Measured: adding 5 µs of spinning per request to the floor
//! moved it from the client's CPU to the other one and the proxy the other
//! way round, with blocks of 100; with blocks of 1,000 both servers fall
//! into each placement about as often, as a single server does when it
//! runs alone (BENCHMARKS.md).
//!
//! Without `--headline` the run is repeated per thread placement
//! (`--placement free,same,split`): free, everything on CPU 0, and client
//! on CPU 0 with servers on CPU 1, a diagnosis of where the time goes
//! (a wakeup across CPUs costs tens of µs on a VM). Scan, connect and
//! disconnect are measured separately (connect and disconnect alternate:
//! connect, then disconnect of the session it returned); "all" is the
//! three together.
//!
//! `--client-wait poll`: the client waits for its reply in `poll(2)` for
//! POLLIN before reading, as a VMM's event loop does, instead of blocked
//! in `read`. A diagnosis: over Unix sockets a blocked read is also woken
//! when the server takes the request out of the socket, and sleeps again
//! if the reply is not there yet, so the default client also measures how
//! long a server takes between reading a request and writing its reply
//! (BENCHMARKS.md, "The guest's extra wakeup").
//!
//! Scan minimum latency is 0 here: the product's 150 ms default exists so
//! `iw` does not hang, and would otherwise be all this measured.
//!
//! Run by `cargo test --all-targets` (without cargo bench's `--bench`
//! argument) it does a smoke run of a few requests of both.

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
mod imp {
    use std::io::{self, Read, Write};
    use std::net::{IpAddr, SocketAddr, TcpStream};
    use std::os::unix::io::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use proxy_wifi::handler::HandlerSettings;
    use proxy_wifi::protocol::{
        DisconnectRequest, Key, Message, Operation, Request, ScanLayout, ScanRequest,
    };
    use proxy_wifi::service::Service;
    use proxy_wifi::test_utils::wpa2_connect;
    use proxy_wifi::transport::framing::read_request;
    use proxy_wifi::transport::{RequestListener, TransportConfig};
    use proxy_wifi::wifi::simulated::SimulatedWifi;
    use tokio::io::AsyncWriteExt;
    use tokio::runtime::Runtime;

    use super::common::{ServerProcess, TaskFigures, Threads};

    type Error = Box<dyn std::error::Error + Send + Sync>;

    const REQUEST_PORT: u32 = 12345;
    /// `--runtime multi` without a count: one worker, the `proxy-wifi`
    /// binary's runtime before it became current-thread.
    const BINARY_WORKERS: usize = 1;
    const KINDS: [&str; 3] = ["scan", "connect", "disconnect"];

    struct Options {
        requests: usize,
        block: usize,
        warmup: usize,
        runtime: RuntimeKind,
        placements: Vec<Placement>,
        /// The headline instead of the per-placement tables.
        headline: bool,
        /// Runs of the headline.
        runs: usize,
        /// The proxy under test: the `proxy-wifi` binary (headline
        /// default) or a `Service` in this process.
        binary: bool,
        /// Extra arguments for `proxy-wifi serve` (`--proxy-args "--threads 2"`).
        binary_args: Vec<String>,
        /// The `proxy-wifi` binary to run (`--proxy-bin PATH`; default: the
        /// one cargo built with this benchmark), e.g. another commit's build
        /// for a before/after comparison in one sitting.
        binary_path: PathBuf,
        /// Transports measured, of [`TRANSPORTS`] (`--transports tcp,unix`).
        transports: Vec<&'static str>,
        /// With the headline: the floor measured against a second floor
        /// process too (`--no-calibration` leaves it out).
        calibration: bool,
        smoke: bool,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum RuntimeKind {
        /// Multi-thread with this many workers.
        Multi(usize),
        Current,
    }

    impl RuntimeKind {
        fn describe(self) -> String {
            match self {
                RuntimeKind::Multi(n) => format!("multi-thread, {n} worker(s)"),
                RuntimeKind::Current => {
                    "current-thread, on its own thread (as the proxy-wifi binary)".to_string()
                }
            }
        }
    }

    /// CPUs available at start (before any pinning, which would change
    /// what `available_parallelism` says).
    fn workers() -> usize {
        static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    fn parse_args() -> Result<Options, Error> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let smoke = !args.iter().any(|a| a == "--bench");
        let headline = args.iter().any(|a| a == "--headline");
        let mut options = Options {
            requests: match (smoke, headline) {
                (true, _) => 40,
                (false, true) => 5_000,
                (false, false) => 20_000,
            },
            block: if headline { 1_000 } else { 500 },
            warmup: match (smoke, headline) {
                (true, _) => 10,
                (false, true) => 500,
                (false, false) => 2_000,
            },
            runtime: RuntimeKind::Current,
            placements: Vec::new(),
            headline,
            runs: if smoke { 1 } else { 5 },
            binary: headline || smoke,
            binary_args: Vec::new(),
            binary_path: PathBuf::from(BUILT_BINARY),
            transports: TRANSPORTS.to_vec(),
            calibration: true,
            smoke,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || -> Result<usize, Error> {
                Ok(it
                    .next()
                    .ok_or_else(|| format!("{arg} needs a value"))?
                    .parse()?)
            };
            match arg.as_str() {
                "--requests" => options.requests = value()?,
                "--block" => options.block = value()?.max(1),
                "--warmup" => options.warmup = value()?,
                "--runs" => options.runs = value()?.max(1),
                "--proxy" => {
                    options.binary = match it.next().map(String::as_str) {
                        Some("binary") => true,
                        Some("library") => false,
                        other => {
                            return Err(format!("--proxy binary|library, not {other:?}").into())
                        }
                    }
                }
                "--proxy-args" => {
                    options.binary_args = it
                        .next()
                        .ok_or("--proxy-args needs a value")?
                        .split_whitespace()
                        .map(String::from)
                        .collect()
                }
                "--proxy-bin" => {
                    options.binary_path =
                        PathBuf::from(it.next().ok_or("--proxy-bin needs a path")?);
                }
                "--transports" => {
                    let mut chosen = Vec::new();
                    for t in it.next().map(String::as_str).unwrap_or("").split(',') {
                        match TRANSPORTS.iter().find(|known| **known == t) {
                            Some(known) => chosen.push(*known),
                            None => return Err(format!("--transports tcp,unix: not {t:?}").into()),
                        }
                    }
                    options.transports = chosen;
                }
                "--runtime" => {
                    options.runtime = match it.next().map(String::as_str) {
                        Some("multi") => RuntimeKind::Multi(BINARY_WORKERS),
                        Some(m) if m.starts_with("multi") && m[5..].parse::<usize>().is_ok() => {
                            RuntimeKind::Multi(m[5..].parse::<usize>()?.max(1))
                        }
                        Some("current") => RuntimeKind::Current,
                        other => {
                            return Err(format!("--runtime multi|current, not {other:?}").into())
                        }
                    }
                }
                "--placement" => {
                    for p in it.next().map(String::as_str).unwrap_or("").split(',') {
                        options.placements.push(match p {
                            "free" => Placement::Free,
                            "same" => Placement::Same,
                            "split" => Placement::Split,
                            other => {
                                return Err(
                                    format!("--placement free,same,split: not {other:?}").into()
                                )
                            }
                        });
                    }
                }
                "--no-calibration" => options.calibration = false,
                "--client-wait" => match it.next().map(String::as_str) {
                    Some("poll") => CLIENT_WAITS_IN_POLL.store(true, Ordering::Relaxed),
                    Some("read") => CLIENT_WAITS_IN_POLL.store(false, Ordering::Relaxed),
                    other => return Err(format!("--client-wait read|poll, not {other:?}").into()),
                },
                "--help" | "-h" => {
                    println!(
                        "cargo bench --profile profiling --bench e2e -- [--headline [--runs N] [--no-calibration]] [--client-wait read|poll] [--proxy binary|library] [--proxy-args ARGS] [--proxy-bin PATH] [--transports tcp,unix] [--requests N] [--block N] [--warmup N] [--runtime current|multi|multiN] [--placement free,same,split]"
                    );
                    std::process::exit(0);
                }
                // cargo's own arguments (--bench, filters) are ignored.
                _ => {}
            }
        }
        if options.smoke {
            options.block = options.block.min(options.requests.max(1));
        }
        Ok(options)
    }

    /// A runtime for one server, kept alive (with its thread, for the
    /// current-thread flavour) until dropped.
    struct ServerRuntime {
        handle: tokio::runtime::Handle,
        _rt: Option<Runtime>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl ServerRuntime {
        fn new(kind: RuntimeKind, name: &str) -> Result<ServerRuntime, Error> {
            match kind {
                RuntimeKind::Multi(n) => {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(n)
                        .thread_name(name)
                        .enable_all()
                        .build()?;
                    Ok(ServerRuntime {
                        handle: rt.handle().clone(),
                        _rt: Some(rt),
                        stop: None,
                        thread: None,
                    })
                }
                RuntimeKind::Current => {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .thread_name(name)
                        .enable_all()
                        .build()?;
                    let handle = rt.handle().clone();
                    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                    let thread =
                        std::thread::Builder::new()
                            .name(name.to_string())
                            .spawn(move || {
                                let _ = rt.block_on(stopped);
                            })?;
                    Ok(ServerRuntime {
                        handle,
                        _rt: None,
                        stop: Some(stop),
                        thread: Some(thread),
                    })
                }
            }
        }
    }

    impl Drop for ServerRuntime {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// Where a client connects.
    #[derive(Clone)]
    enum Target {
        Tcp(SocketAddr),
        Unix(PathBuf),
    }

    /// The client: one request on a new connection, reply read until the
    /// server closes. The same code for both servers.
    fn exchange(target: &Target, request: &[u8], reply: &mut Vec<u8>) -> io::Result<()> {
        reply.clear();
        match target {
            Target::Tcp(address) => {
                let mut s = TcpStream::connect(address)?;
                s.set_nodelay(true)?;
                s.write_all(request)?;
                read_reply(&mut s, reply)?;
            }
            Target::Unix(path) => {
                let mut s = UnixStream::connect(path)?;
                s.write_all(request)?;
                read_reply(&mut s, reply)?;
            }
        }
        Ok(())
    }

    /// `--client-wait poll`: the client waits for its reply in `poll(2)`
    /// for POLLIN before each read, as an event-loop VMM does, instead of
    /// blocking in `read`. A blocked `read` on a Unix socket is also woken
    /// when the server takes the request out of the socket (that frees the
    /// client's send buffer), and if the reply is not there yet it sleeps
    /// again: one wakeup more, whose odds depend on how long the server
    /// takes from reading the request to writing the reply
    /// (BENCHMARKS.md). A POLLIN wait is woken by the reply only.
    static CLIENT_WAITS_IN_POLL: AtomicBool = AtomicBool::new(false);

    fn read_reply<S: Read + AsRawFd>(s: &mut S, reply: &mut Vec<u8>) -> io::Result<()> {
        if !CLIENT_WAITS_IN_POLL.load(Ordering::Relaxed) {
            s.read_to_end(reply)?;
            return Ok(());
        }
        let mut buf = [0u8; 4096];
        loop {
            let mut fd = libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, for the duration of the call.
            if unsafe { libc::poll(&mut fd, 1, -1) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            match s.read(&mut buf)? {
                0 => return Ok(()),
                n => reply.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn connect_request() -> Result<Vec<u8>, Error> {
        Ok(
            Request::Connect(wpa2_connect("FakeWpa2Psk", Key::new(vec![0x5a; 32])))
                .encode()?
                .to_vec(),
        )
    }

    fn disconnect_request(session_id: u64) -> Result<Vec<u8>, Error> {
        Ok(Request::Disconnect(DisconnectRequest { session_id })
            .encode()?
            .to_vec())
    }

    fn session_of(reply: &[u8]) -> Result<u64, Error> {
        match Message::decode(reply, ScanLayout::Current)? {
            Message::ConnectResponse(r) if r.result_code == 0 => Ok(r.session_id),
            other => Err(format!("unexpected connect reply {:?}", other.operation()).into()),
        }
    }

    /// One server under test: where it listens, per transport.
    struct Server {
        threads: Threads,
        tcp: Target,
        unix: Target,
    }

    impl Server {
        /// Context switches and CPU time of the server's threads so far.
        fn figures(&self) -> TaskFigures {
            self.threads.figures()
        }

        fn target(&self, transport: &str) -> &Target {
            if transport == "tcp" {
                &self.tcp
            } else {
                &self.unix
            }
        }
    }

    /// Latencies in nanoseconds, per kind, and the server threads' context
    /// switches while they were taken.
    #[derive(Default)]
    struct Samples {
        by_kind: [Vec<u64>; 3],
        switches: u64,
    }

    /// `count` scans and `count` connect/disconnect pairs against `target`.
    fn run_block(
        target: &Target,
        count: usize,
        scan: &[u8],
        connect: &[u8],
        expect: &Replies,
        mut samples: Option<&mut Samples>,
    ) -> Result<(), Error> {
        let mut reply = Vec::with_capacity(expect.scan.len());
        for _ in 0..count {
            let t = Instant::now();
            exchange(target, scan, &mut reply)?;
            let scan_ns = t.elapsed().as_nanos() as u64;
            if reply.len() != expect.scan.len() {
                return Err(format!("scan reply of {} bytes", reply.len()).into());
            }

            let t = Instant::now();
            exchange(target, connect, &mut reply)?;
            let connect_ns = t.elapsed().as_nanos() as u64;
            let disconnect = disconnect_request(session_of(&reply)?)?;

            let t = Instant::now();
            exchange(target, &disconnect, &mut reply)?;
            let disconnect_ns = t.elapsed().as_nanos() as u64;
            if reply != expect.disconnect {
                return Err("unexpected disconnect reply".into());
            }
            if let Some(s) = samples.as_deref_mut() {
                s.by_kind[0].push(scan_ns);
                s.by_kind[1].push(connect_ns);
                s.by_kind[2].push(disconnect_ns);
            }
        }
        Ok(())
    }

    /// proxy-wifi's replies, captured once; the floor sends these bytes.
    #[derive(Clone)]
    struct Replies {
        scan: Vec<u8>,
        connect: Vec<u8>,
        disconnect: Vec<u8>,
    }

    async fn floor_reply<S>(mut stream: S, replies: Arc<Replies>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        // The proxy's own framing, so that reading a request costs both
        // the same (one read when it is all there).
        let Ok((header, _body)) = read_request(&mut stream).await else {
            return;
        };
        let reply = match header.operation {
            Operation::ScanRequest => &replies.scan,
            Operation::ConnectRequest => &replies.connect,
            _ => &replies.disconnect,
        };
        if stream.write_all(reply).await.is_ok() {
            let _ = stream.flush().await;
            let _ = stream.shutdown().await;
        }
    }

    /// The floor's listeners: TCP on a free loopback port, and hybrid
    /// vsock's `floor.sock_<port>` in `dir`, with their TCP address. They
    /// are the product's own (`TransportConfig::bind_host`), as the proxy's
    /// are, so accepting costs both the same: on Linux neither registers a
    /// connection with the reactor unless it has to wait.
    async fn floor_listeners(
        dir: &Path,
    ) -> Result<
        (
            Box<dyn RequestListener>,
            Box<dyn RequestListener>,
            SocketAddr,
        ),
        Error,
    > {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let tcp = TransportConfig::Tcp {
            address: loopback,
            request_port: 0,
            notification_port: 9,
        }
        .bind_host()
        .await?
        .listener;
        let port = tcp
            .local_port()
            .ok_or("the floor's TCP listener has no port")?;
        let unix = TransportConfig::HybridVsock {
            path: dir.join("floor.sock"),
            request_port: REQUEST_PORT,
            notification_port: 9,
        }
        .bind_host()
        .await?
        .listener;
        Ok((tcp, unix, SocketAddr::new(loopback, u16::try_from(port)?)))
    }

    /// The floor's accept loops, serving a connection as the proxy does:
    /// polled once where it is accepted (most are answered in that poll),
    /// on a task of its own only if it has to wait.
    fn spawn_floor(
        handle: &tokio::runtime::Handle,
        listeners: [Box<dyn RequestListener>; 2],
        replies: Arc<Replies>,
    ) {
        for listener in listeners {
            let replies = replies.clone();
            handle.spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    serve_floor_connection(floor_reply(stream, replies.clone())).await;
                }
            });
        }
    }

    /// One floor connection: polled once here, then, if not done, on a task
    /// of its own.
    async fn serve_floor_connection(reply: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut reply = Box::pin(reply);
        if futures::poll!(reply.as_mut()).is_pending() {
            tokio::spawn(reply);
        }
    }

    /// The floor in this process, on `rt` (with `--proxy library`, whose
    /// proxy is in this process too).
    fn start_floor(rt: &ServerRuntime, dir: &Path, replies: Replies) -> Result<Server, Error> {
        let (tcp, unix, tcp_address) = rt.handle.block_on(floor_listeners(dir))?;
        spawn_floor(&rt.handle, [tcp, unix], Arc::new(replies));
        Ok(Server {
            threads: Threads::Named("floor"),
            tcp: Target::Tcp(tcp_address),
            unix: Target::Unix(dir.join(format!("floor.sock_{REQUEST_PORT}"))),
        })
    }

    const FLOOR_REPLIES: [&str; 3] = ["reply.scan", "reply.connect", "reply.disconnect"];
    const FLOOR_PORT_FILE: &str = "floor.port";

    /// `--serve-floor DIR`: this executable as the floor's own process,
    /// the counterpart of the `proxy-wifi` binary: the replies from files
    /// in `DIR`, a current-thread runtime on the main thread (the binary's
    /// runtime), the TCP port written to `DIR/floor.port` once listening.
    /// Runs until killed.
    pub fn serve_floor(dir: &Path) -> Result<(), Error> {
        let [scan, connect, disconnect] = FLOOR_REPLIES.map(|name| std::fs::read(dir.join(name)));
        let replies = Arc::new(Replies {
            scan: scan?,
            connect: connect?,
            disconnect: disconnect?,
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (tcp, unix, tcp_address) = floor_listeners(dir).await?;
            let port = tcp_address.port();
            spawn_floor(&tokio::runtime::Handle::current(), [tcp, unix], replies);
            // Written whole, then renamed: the parent never reads half a port.
            let partial = dir.join("floor.port.partial");
            std::fs::write(&partial, port.to_string())?;
            std::fs::rename(&partial, dir.join(FLOOR_PORT_FILE))?;
            std::future::pending::<()>().await;
            Result::<(), Error>::Ok(())
        })
    }

    /// The floor as a process of its own (with the `proxy-wifi` binary as
    /// the proxy): the scheduler then sees two server processes alike,
    /// neither sharing the client's process.
    fn start_floor_process(
        dir: &Path,
        replies: &Replies,
    ) -> Result<(Server, ServerProcess), Error> {
        let dir = dir.join("floor");
        std::fs::create_dir(&dir)?;
        for (name, bytes) in
            FLOOR_REPLIES
                .iter()
                .zip([&replies.scan, &replies.connect, &replies.disconnect])
        {
            std::fs::write(dir.join(name), bytes)?;
        }
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("--serve-floor")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("floor.log"))?)
            .spawn()?;
        let mut process = ServerProcess { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        let port: u16 = loop {
            if let Ok(text) = std::fs::read_to_string(dir.join(FLOOR_PORT_FILE)) {
                break text.trim().parse()?;
            }
            if let Some(status) = process.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("floor.log")).unwrap_or_default();
                return Err(format!("the floor process exited: {status}: {log}").into());
            }
            if Instant::now() > deadline {
                return Err("the floor process is not listening after 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let server = Server {
            threads: Threads::Process(process.pid()),
            tcp: Target::Tcp(SocketAddr::from(([127, 0, 0, 1], port))),
            unix: Target::Unix(dir.join(format!("floor.sock_{REQUEST_PORT}"))),
        };
        Ok((server, process))
    }

    /// proxy-wifi: two `Service`s (TCP and hybrid vsock) on one simulated
    /// backend, scan minimum latency 0.
    fn start_proxy(rt: &ServerRuntime, dir: &Path) -> Result<(Server, Vec<Service>), Error> {
        let wifi = SimulatedWifi::reference();
        let settings = HandlerSettings {
            scan_min_latency: Duration::ZERO,
            ..HandlerSettings::default()
        };
        let uds = dir.join("proxy.sock");
        let tcp = Service::builder(
            TransportConfig::Tcp {
                address: "127.0.0.1".parse()?,
                request_port: 0,
                notification_port: 9,
            },
            wifi.clone(),
        )
        .settings(settings.clone())
        .build();
        let hybrid = Service::builder(
            TransportConfig::HybridVsock {
                path: uds.clone(),
                request_port: REQUEST_PORT,
                notification_port: 12346,
            },
            wifi,
        )
        .settings(settings)
        .build();
        let port = rt.handle.block_on(async {
            tcp.start().await?;
            hybrid.start().await?;
            Result::<_, Error>::Ok(tcp.request_port().await)
        })?;
        let port = port.ok_or("the TCP service has no port")?;
        let server = Server {
            threads: Threads::Named("proxy"),
            tcp: Target::Tcp(SocketAddr::from(([127, 0, 0, 1], port as u16))),
            unix: Target::Unix(PathBuf::from(format!("{}_{REQUEST_PORT}", uds.display()))),
        };
        Ok((server, vec![tcp, hybrid]))
    }

    /// The `proxy-wifi` binary cargo built with this benchmark.
    const BUILT_BINARY: &str = env!("CARGO_BIN_EXE_proxy-wifi");

    /// The `proxy-wifi` binary as users run it: `serve --config FILE` with
    /// two simulated guests, one on TCP and one on hybrid vsock, scan
    /// minimum latency 0, log level warn; stopped when dropped.
    fn start_binary(
        binary: &Path,
        dir: &Path,
        extra: &[String],
    ) -> Result<(Server, ServerProcess), Error> {
        // A free port: bound, noted and released (nothing else here binds).
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let uds = dir.join("bin.sock");
        let config = dir.join("bin.toml");
        std::fs::write(
            &config,
            format!(
                "backend = \"simulated\"\nlog_level = \"warn\"\n\n\
                 [[guest]]\nname = \"tcp\"\ntcp = \"127.0.0.1\"\nrequest_port = {port}\nnotification_port = 9\nscan_min_latency_ms = 0\n\n\
                 [[guest]]\nname = \"unix\"\nhybrid_vsock = \"{}\"\nscan_min_latency_ms = 0\n",
                uds.display()
            ),
        )?;
        let mut child = std::process::Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("bin.log"))?)
            .spawn()?;
        let tcp = SocketAddr::from(([127, 0, 0, 1], port));
        let unix = PathBuf::from(format!("{}_{REQUEST_PORT}", uds.display()));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(unix.exists() && TcpStream::connect(tcp).is_ok()) {
            if let Some(status) = child.try_wait()? {
                return Err(format!("{} exited: {status}", binary.display()).into());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("{} not listening after 60 s", binary.display()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = child.id();
        Ok((
            Server {
                threads: Threads::Process(pid),
                tcp: Target::Tcp(tcp),
                unix: Target::Unix(unix),
            },
            ServerProcess { child },
        ))
    }

    fn capture_replies(proxy: &Server) -> Result<Replies, Error> {
        let target = &proxy.tcp;
        let mut scan = Vec::new();
        exchange(
            target,
            &Request::Scan(ScanRequest::default()).encode()?,
            &mut scan,
        )?;
        let mut connect = Vec::new();
        exchange(target, &connect_request()?, &mut connect)?;
        let mut disconnect = Vec::new();
        exchange(
            target,
            &disconnect_request(session_of(&connect)?)?,
            &mut disconnect,
        )?;
        match Message::decode(&scan, ScanLayout::Current)? {
            Message::ScanResponse(s) if !s.bss.is_empty() => {}
            _ => return Err("proxy-wifi's scan reply is not a scan response".into()),
        }
        Ok(Replies {
            scan,
            connect,
            disconnect,
        })
    }

    fn percentile(sorted: &[u64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
    }

    fn machine() -> String {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        format!("{} x {cpu}, kernel {kernel}", workers())
    }

    const TRANSPORTS: [&str; 2] = ["tcp", "unix"];

    /// Where the client and server threads run.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Placement {
        /// Wherever the kernel puts them.
        Free,
        /// All on CPU 0: a request is a direct switch between threads.
        Same,
        /// Client on CPU 0, both servers' threads on CPU 1: every request
        /// crosses CPUs, like a guest vCPU talking to a host thread.
        Split,
    }

    impl Placement {
        fn name(self) -> &'static str {
            match self {
                Placement::Free => "free",
                Placement::Same => "same",
                Placement::Split => "split",
            }
        }

        fn describe(self) -> &'static str {
            match self {
                Placement::Free => "free: threads wherever the kernel schedules them",
                Placement::Same => "same: client and servers pinned to CPU 0",
                Placement::Split => "split: client pinned to CPU 0, servers pinned to CPU 1",
            }
        }
    }

    fn set_affinity(tid: libc::pid_t, cpus: &[usize]) -> bool {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes
        // inside it; sched_setaffinity reads it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &cpu in cpus {
                libc::CPU_SET(cpu, &mut set);
            }
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        }
    }

    /// Pins this thread (the client), the server runtimes' threads and
    /// every thread of the `processes` (the proxy-wifi binary and the
    /// floor's process, when they are the servers; threads they start
    /// later are not pinned).
    fn place(placement: Placement, processes: &[u32]) -> bool {
        let all: Vec<usize> = (0..workers()).collect();
        if placement != Placement::Free && all.len() < 2 {
            return false;
        }
        let (client, servers): (&[usize], &[usize]) = match placement {
            Placement::Free => (&all, &all),
            Placement::Same => (&[0], &[0]),
            Placement::Split => (&[0], &[1]),
        };
        let mut ok = set_affinity(0, client);
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if matches!(comm.trim_end(), "proxy" | "floor") {
                    if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) {
                        ok &= set_affinity(tid, servers);
                    }
                }
            }
        }
        for pid in processes {
            if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                for task in tasks.flatten() {
                    if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) {
                        ok &= set_affinity(tid, servers);
                    }
                }
            }
        }
        ok
    }

    fn measure(
        options: &Options,
        servers: &[&Server; 2],
        scan: &[u8],
        connect: &[u8],
        replies: &Replies,
    ) -> Result<Vec<Vec<Samples>>, Error> {
        let scan = scan.to_vec();
        let connect = connect.to_vec();
        let (scan, connect) = (&scan[..], &connect[..]);
        let transports = &options.transports;
        let mut results: Vec<Vec<Samples>> = transports
            .iter()
            .map(|_| servers.iter().map(|_| Samples::default()).collect())
            .collect();
        for (ti, transport) in transports.iter().enumerate() {
            for server in servers {
                run_block(
                    server.target(transport),
                    options.warmup,
                    scan,
                    connect,
                    replies,
                    None,
                )?;
            }
            let mut done = 0;
            let mut round = 0;
            while done < options.requests {
                let count = options.block.min(options.requests - done);
                for k in 0..servers.len() {
                    let si = (k + round) % servers.len();
                    let server = servers[si];
                    let before = server.figures();
                    run_block(
                        server.target(transport),
                        count,
                        scan,
                        connect,
                        replies,
                        Some(&mut results[ti][si]),
                    )?;
                    results[ti][si].switches += server
                        .figures()
                        .switches()
                        .saturating_sub(before.switches());
                }
                done += count;
                round += 1;
            }
        }

        Ok(results)
    }

    /// `count` requests of one kind against `target`, each reply checked
    /// against `expect`.
    fn run_one_kind(
        target: &Target,
        count: usize,
        request: &[u8],
        expect: &[u8],
        mut samples: Option<&mut Vec<u64>>,
    ) -> Result<(), Error> {
        let mut reply = Vec::with_capacity(expect.len());
        for _ in 0..count {
            let t = Instant::now();
            exchange(target, request, &mut reply)?;
            let ns = t.elapsed().as_nanos() as u64;
            if reply != expect {
                return Err(format!("unexpected reply of {} bytes", reply.len()).into());
            }
            if let Some(s) = samples.as_deref_mut() {
                s.push(ns);
            }
        }
        Ok(())
    }

    fn load_average() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".into())
    }

    /// The headline's figure columns, titled with the servers' names (the
    /// rows use the same widths).
    fn headline_columns(names: [&str; 2]) -> String {
        let [a, b] = names;
        let titles = [
            (format!("{a} p50"), 10),
            (format!("{b} p50"), 10),
            ("ratio".to_string(), 7),
            (format!("{a} cs/req"), 13),
            (format!("{b} cs/req"), 13),
            (format!("{a} cpu"), 9),
            (format!("{b} cpu"), 9),
        ];
        titles
            .iter()
            .map(|(title, width)| format!("{title:>width$}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A block's wakeup pattern: its server's context switches per request,
    /// rounded, 1 to 3 (see the headline's legend). Two servers' latencies
    /// compare like with like only within one pattern: on this kind of
    /// machine the pattern a run falls into moves a server's p50 by up to
    /// half, whichever server it is (see the calibration).
    fn wakeup_pattern(switches: f64, requests: usize) -> usize {
        ((switches / requests.max(1) as f64).round() as usize).clamp(1, PATTERNS)
    }

    /// Wakeup patterns told apart (3: on the client's CPU over Unix sockets).
    const PATTERNS: usize = 3;

    /// Blocks a server needs in a pattern before its p50 there is printed.
    const MIN_PATTERN_BLOCKS: usize = 5;

    /// One server's blocks in one wakeup pattern, all runs pooled.
    #[derive(Default)]
    struct PatternBlocks {
        latencies: Vec<u64>,
        blocks: usize,
    }

    impl PatternBlocks {
        /// The pooled p50, once there are enough blocks to tell.
        fn p50(&mut self) -> Option<f64> {
            self.latencies.sort_unstable();
            (self.blocks >= MIN_PATTERN_BLOCKS).then(|| percentile(&self.latencies, 50.0))
        }
    }

    /// Per server (proxy, floor), per wakeup pattern (index: pattern - 1).
    type ByPattern = [[PatternBlocks; PATTERNS]; 2];

    /// Where a server's thread ran, read from its context switches per
    /// request (see the headline's legend): on the client's CPU a server
    /// is woken once and preempted by the client once (TCP) or twice (Unix
    /// sockets) per request; on the other CPU it is woken once, or twice
    /// when it reads before the client's write has landed.
    fn placement_of(transport: &str, switches_per_request: f64) -> &'static str {
        let near = if transport == "tcp" { 1.5 } else { 2.5 };
        if switches_per_request < near {
            "apart"
        } else {
            "near"
        }
    }

    fn median(values: &mut [f64]) -> f64 {
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => values[n / 2],
            n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        }
    }

    /// The headline: threads wherever the kernel puts them (how users run
    /// it), `disconnect` requests (session 0, never a live one: the proxy
    /// answers from its state, and both servers send the same 7 bytes),
    /// proxy and floor interleaved in blocks, `runs` runs, medians over the
    /// runs. Context switches of each server's threads per request show the
    /// wakeups objectively: one per request is the floor's.
    ///
    /// `names` label the two servers: ("proxy", "floor"), or for the
    /// calibration two floor processes.
    fn headline(
        options: &Options,
        servers: &[&Server; 2],
        names: [&str; 2],
        replies: &Replies,
    ) -> Result<(), Error> {
        let request = disconnect_request(0)?;
        let [a, b] = names;
        println!();
        println!(
            "placement free (unpinned), disconnect requests, {} per server, transport and run, blocks of {} alternating, warm-up {}, {} run(s)",
            options.requests, options.block, options.warmup, options.runs
        );
        println!(
            "threads after start: {a} {}, {b} {}",
            servers[0].figures().threads,
            servers[1].figures().threads
        );
        println!(
            "cs/req: the server threads' context switches per request; cpu µs/req: their time on a CPU (user and kernel) per request"
        );
        println!(
            "placement ({a}/{b}), read from cs/req: near = on the client's CPU (woken, then preempted by the client: about 2 per request over TCP, 3 over Unix sockets), apart = on the other CPU (1, or 2 when the server reads before the request has landed)"
        );
        println!();
        println!(
            "{:<4} {:<15} {:<6} {}  placement",
            "run",
            "load average",
            "trans.",
            headline_columns(names)
        );
        // Per transport: proxy p50s, floor p50s, ratios, switches per
        // request (proxy, floor), CPU µs per request (proxy, floor).
        let mut summary: Vec<[Vec<f64>; 7]> = options
            .transports
            .iter()
            .map(|_| Default::default())
            .collect();
        // Per transport: the ratios of the runs in which both servers were
        // placed alike (a diagnosis beside the headline median).
        let mut alike: Vec<Vec<f64>> = options.transports.iter().map(|_| Vec::new()).collect();
        // Per transport and server: latencies by wakeup pattern (index:
        // pattern - 1), and how many blocks fell into each, all runs pooled.
        let mut by_pattern: Vec<ByPattern> = options
            .transports
            .iter()
            .map(|_| Default::default())
            .collect();
        for run in 0..options.runs {
            let load = load_average();
            for (ti, transport) in options.transports.iter().enumerate() {
                for server in servers {
                    run_one_kind(
                        server.target(transport),
                        options.warmup,
                        &request,
                        &replies.disconnect,
                        None,
                    )?;
                }
                let mut latencies = [Vec::new(), Vec::new()];
                // Context switches and CPU µs, summed over blocks.
                let mut work = [(0.0, 0.0); 2];
                let mut done = 0;
                let mut round = 0;
                while done < options.requests {
                    let count = options.block.min(options.requests - done);
                    for k in 0..servers.len() {
                        // Which server goes first alternates by block and run.
                        let si = (k + round + run) % servers.len();
                        let before = servers[si].figures();
                        let first = latencies[si].len();
                        run_one_kind(
                            servers[si].target(transport),
                            count,
                            &request,
                            &replies.disconnect,
                            Some(&mut latencies[si]),
                        )?;
                        let (switches, cpu_us) = servers[si].figures().per(&before, 1);
                        work[si].0 += switches;
                        work[si].1 += cpu_us;
                        let pattern = &mut by_pattern[ti][si][wakeup_pattern(switches, count) - 1];
                        pattern.latencies.extend_from_slice(&latencies[si][first..]);
                        pattern.blocks += 1;
                    }
                    done += count;
                    round += 1;
                }
                let p50: Vec<f64> = latencies
                    .iter_mut()
                    .map(|v| {
                        v.sort_unstable();
                        percentile(v, 50.0)
                    })
                    .collect();
                let per = |si: usize, total: f64| total / latencies[si].len().max(1) as f64;
                let ratio = p50[0] / p50[1];
                let row = [
                    p50[0],
                    p50[1],
                    ratio,
                    per(0, work[0].0),
                    per(1, work[1].0),
                    per(0, work[0].1),
                    per(1, work[1].1),
                ];
                let placed = [
                    placement_of(transport, row[3]),
                    placement_of(transport, row[4]),
                ];
                println!(
                    "{:<4} {:<15} {:<6} {:>10.1} {:>10.1} {:>7.2} {:>13.2} {:>13.2} {:>9.1} {:>9.1}  {}/{}",
                    run + 1,
                    load,
                    transport,
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    row[4],
                    row[5],
                    row[6],
                    placed[0],
                    placed[1]
                );
                if placed[0] == placed[1] {
                    alike[ti].push(ratio);
                }
                for (column, value) in summary[ti].iter_mut().zip(row) {
                    column.push(value);
                }
            }
        }
        println!();
        println!(
            "median of {} run(s), p50 and cpu in µs (load average now {}):",
            options.runs,
            load_average()
        );
        println!("{:<6} {}", "trans.", headline_columns(names));
        for (ti, transport) in options.transports.iter().enumerate() {
            let s = &mut summary[ti];
            let m: Vec<f64> = s.iter_mut().map(|v| median(v)).collect();
            println!(
                "{:<6} {:>10.1} {:>10.1} {:>7.2} {:>13.2} {:>13.2} {:>9.1} {:>9.1}",
                transport, m[0], m[1], m[2], m[3], m[4], m[5], m[6]
            );
        }
        for (ti, transport) in options.transports.iter().enumerate() {
            let runs = alike[ti].len();
            match runs {
                0 => println!("{transport}: no run with both servers placed alike"),
                _ => println!(
                    "{transport}: median ratio of the {runs} run(s) with both servers placed alike: {:.2}",
                    median(&mut alike[ti])
                ),
            }
        }
        println!();
        println!(
            "by wakeup pattern, all runs pooled (a block's pattern: its server's cs/req, rounded; p50 in µs, printed from {MIN_PATTERN_BLOCKS} blocks of {} on):",
            options.block
        );
        println!(
            "{:<6} {:>6} {:>13} {:>13} {:>10} {:>10} {:>7}",
            "trans.",
            "cs/req",
            format!("{a} blocks"),
            format!("{b} blocks"),
            format!("{a} p50"),
            format!("{b} p50"),
            "ratio"
        );
        for (ti, transport) in options.transports.iter().enumerate() {
            let [first_server, second_server] = &mut by_pattern[ti];
            for (pattern, (x, y)) in first_server
                .iter_mut()
                .zip(second_server.iter_mut())
                .enumerate()
            {
                let (first_blocks, second_blocks) = (x.blocks, y.blocks);
                if first_blocks + second_blocks == 0 {
                    continue;
                }
                let (first, second) = (x.p50(), y.p50());
                let cell = |p50: Option<f64>| p50.map_or("-".to_string(), |v| format!("{v:.1}"));
                let ratio = match (first, second) {
                    (Some(x), Some(y)) => format!("{:.2}", x / y),
                    _ => "-".to_string(),
                };
                println!(
                    "{:<6} {:>6} {:>13} {:>13} {:>10} {:>10} {:>7}",
                    transport,
                    pattern + 1,
                    first_blocks,
                    second_blocks,
                    cell(first),
                    cell(second),
                    ratio
                );
            }
        }
        println!(
            "threads after load: {a} {}, {b} {}",
            servers[0].figures().threads,
            servers[1].figures().threads
        );
        Ok(())
    }

    fn report(transports: &[&str], results: &[Vec<Samples>]) {
        println!();
        println!(
            "{:<6} {:<11} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
            "", "", "proxy", "proxy", "floor", "floor", "ratio", "ratio"
        );
        println!(
            "{:<6} {:<11} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
            "trans.", "request", "p50 µs", "p99 µs", "p50 µs", "p99 µs", "p50", "p99"
        );
        for (ti, transport) in transports.iter().enumerate() {
            // One row per kind (Some(index)), then all kinds together.
            let rows = (0..KINDS.len()).map(Some).chain([None]);
            for kind in rows {
                let stats: Vec<(f64, f64)> = results[ti]
                    .iter()
                    .map(|s| {
                        let mut v: Vec<u64> = match kind {
                            Some(k) => s.by_kind[k].clone(),
                            None => s.by_kind.concat(),
                        };
                        v.sort_unstable();
                        (percentile(&v, 50.0), percentile(&v, 99.0))
                    })
                    .collect();
                let (pp50, pp99) = stats[0];
                let (fp50, fp99) = stats[1];
                println!(
                    "{:<6} {:<11} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>9.2} {:>9.2}",
                    transport,
                    kind.map_or("all", |k| KINDS[k]),
                    pp50,
                    pp99,
                    fp50,
                    fp99,
                    pp50 / fp50,
                    pp99 / fp99
                );
            }
        }
        println!();
        for (ti, transport) in transports.iter().enumerate() {
            let per = |si: usize| {
                let s: &Samples = &results[ti][si];
                s.switches as f64 / s.by_kind.iter().map(Vec::len).sum::<usize>().max(1) as f64
            };
            println!(
                "{transport}: server-thread context switches per request: proxy {:.2}, floor {:.2}",
                per(0),
                per(1)
            );
        }
    }

    pub fn main() -> Result<(), Error> {
        let args: Vec<String> = std::env::args().collect();
        if let Some(i) = args.iter().position(|a| a == "--serve-floor") {
            let dir = args.get(i + 1).ok_or("--serve-floor DIR")?;
            return serve_floor(Path::new(dir));
        }
        let options = parse_args()?;
        workers();
        let dir = tempfile::tempdir()?;
        let proxy_rt = ServerRuntime::new(options.runtime, "proxy")?;
        let floor_rt = ServerRuntime::new(options.runtime, "floor")?;
        let (proxy, services, binary) = if options.binary {
            let (server, binary) =
                start_binary(&options.binary_path, dir.path(), &options.binary_args)?;
            (server, Vec::new(), Some(binary))
        } else {
            let (server, services) = start_proxy(&proxy_rt, dir.path())?;
            (server, services, None)
        };
        let replies = capture_replies(&proxy)?;
        // The floor runs where the proxy does: a process of its own beside
        // the binary, a runtime in this process beside a library proxy.
        let (floor, floor_process) = if options.binary {
            let (server, process) = start_floor_process(dir.path(), &replies)?;
            (server, Some(process))
        } else {
            (start_floor(&floor_rt, dir.path(), replies.clone())?, None)
        };
        let processes: Vec<u32> = binary
            .iter()
            .chain(floor_process.iter())
            .map(ServerProcess::pid)
            .collect();

        println!("proxy-wifi end-to-end latency vs the floor (same framing, no work)");
        println!("machine: {}", machine());
        if options.binary {
            println!(
                "proxy: {} serve --config FILE {} (a TCP and a hybrid-vsock guest, backend simulated)",
                options.binary_path.display(),
                options.binary_args.join(" ")
            );
            println!(
                "floor: a process of its own (this executable, --serve-floor), current-thread runtime on its main thread as the binary; client: one thread, blocking std sockets, a new connection per request"
            );
        } else {
            println!(
                "server runtimes: {}; client: one thread, blocking std sockets, a new connection per request",
                options.runtime.describe()
            );
        }
        println!(
            "client waits for its reply: {}",
            if CLIENT_WAITS_IN_POLL.load(Ordering::Relaxed) {
                "in poll(2) for POLLIN, then reads (--client-wait poll)"
            } else {
                "blocked in read (the default; --client-wait poll to wait in poll(2))"
            }
        );
        println!("scan min latency: 0 (the product's default is 150 ms, for iw; it is off here)");
        println!(
            "replies: scan {} B ({} simulated BSSs), connect {} B, disconnect {} B (the floor sends the same bytes)",
            replies.scan.len(),
            match Message::decode(&replies.scan, ScanLayout::Current)? {
                Message::ScanResponse(s) => s.bss.len(),
                _ => 0,
            },
            replies.connect.len(),
            replies.disconnect.len()
        );
        println!(
            "{} requests per kind, server and transport; blocks of {} alternating proxy/floor; warm-up {}",
            options.requests, options.block, options.warmup
        );
        if options.smoke {
            println!("(smoke run: not invoked by cargo bench; numbers are meaningless)");
        }

        let scan = Request::Scan(ScanRequest::default()).encode()?;
        let connect = connect_request()?;
        let servers = [&proxy, &floor];
        if options.headline || options.smoke {
            place(Placement::Free, &processes);
            println!();
            println!("headline: the proxy against the floor");
            headline(&options, &servers, ["proxy", "floor"], &replies)?;
            if options.calibration && options.binary {
                // The same measurement with a second floor process in the
                // proxy's place: two identical servers, so whatever ratio
                // it shows is the measurement's own spread on this machine.
                let second_dir = dir.path().join("second");
                std::fs::create_dir(&second_dir)?;
                let (second, second_process) = start_floor_process(&second_dir, &replies)?;
                place(Placement::Free, &[second_process.pid()]);
                println!();
                println!(
                    "calibration: a second floor process (floor2, the same program) against the floor, measured as the headline"
                );
                headline(&options, &[&second, &floor], ["floor2", "floor"], &replies)?;
            }
        }
        if options.headline {
            proxy_rt.handle.block_on(async {
                for service in &services {
                    service.stop().await;
                }
            });
            return Ok(());
        }
        let placements = if options.smoke {
            vec![Placement::Free]
        } else if options.placements.is_empty() {
            vec![Placement::Free, Placement::Same, Placement::Split]
        } else {
            options.placements.clone()
        };
        for placement in placements {
            if !place(placement, &processes) {
                println!();
                println!(
                    "placement {}: SKIPPED (needs 2 CPUs and sched_setaffinity)",
                    placement.name()
                );
                continue;
            }
            println!();
            println!("placement {}", placement.describe());
            let results = measure(&options, &servers, &scan, &connect, &replies)?;
            report(&options.transports, &results);
        }
        place(Placement::Free, &processes);
        proxy_rt.handle.block_on(async {
            for service in &services {
                service.stop().await;
            }
        });
        drop(services);
        Ok(())
    }
}

fn main() {
    #[cfg(target_os = "linux")]
    if let Err(e) = imp::main() {
        eprintln!("e2e benchmark failed: {e}");
        std::process::exit(1);
    }
    #[cfg(not(target_os = "linux"))]
    eprintln!("SKIPPED: the e2e benchmark runs on Linux only (Unix sockets, /proc, CPU affinity)");
}
