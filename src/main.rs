//! The `gatehouse` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use gatehouse::app::{self, RunOptions};
use gatehouse_proxy::ProxyConfig;
use gatehouse_translate::{ListenMapEntry, TranslateOptions};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Kubernetes-native ingress, security gate and mesh"
)]
struct Cli {
    /// Data-plane worker threads (default: one per core; `node`: one). With two or
    /// more, each worker runs its own event loop and accepts on its own SO_REUSEPORT
    /// socket; with one, a single runtime thread serves everything. A mesh proxy
    /// (`node`) runs one event loop on that many threads.
    #[arg(long, global = true)]
    workers: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Addrs {
    /// Address Ingresses are served on over HTTP.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Address Ingresses with TLS are served on over HTTPS.
    #[arg(long, default_value = "0.0.0.0:8443")]
    https_addr: SocketAddr,
    /// IP that Gateway listeners bind (on the port their manifest names).
    #[arg(long, default_value = "0.0.0.0")]
    gateway_host: IpAddr,
    /// Rebind a Gateway listener port: PORT=ADDR, or NAMESPACE/NAME:PORT=ADDR for one Gateway.
    #[arg(long = "listen-map", value_name = "MAPPING")]
    listen_map: Vec<ListenMapEntry>,
    /// Address (IP or hostname) to publish in Ingress and Gateway status. Repeatable.
    #[arg(long = "publish-address", value_name = "ADDRESS")]
    publish_addresses: Vec<String>,
}

impl Addrs {
    fn translate(&self) -> TranslateOptions {
        TranslateOptions {
            http_addr: self.http_addr,
            https_addr: self.https_addr,
            gateway_host: self.gateway_host,
            listen_map: self.listen_map.clone(),
            publish_addresses: self
                .publish_addresses
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect(),
            waf: None,
            limiters: Default::default(),
            global_rate_limits: false,
            adaptive: Default::default(),
            locality: Default::default(),
        }
    }
}

/// The web application firewall's rule base and logs.
#[derive(clap::Args, Clone)]
struct WafArgs {
    /// Directory of the OWASP Core Rule Set (crs-setup.conf(.example) and rules/) that
    /// WAF policies run [default: waf/crs, if present].
    #[arg(long)]
    waf_rules: Option<PathBuf>,
    /// File the WAF appends one ModSecurity-style line per matched rule to (default:
    /// the process log).
    #[arg(long)]
    waf_log: Option<PathBuf>,
    /// File the WAF appends one JSON audit event per request that matched to.
    #[arg(long)]
    waf_audit_log: Option<PathBuf>,
    /// File to append one JSON security event per request refused by a rate limit to
    /// (default: the process log).
    #[arg(long)]
    security_log: Option<PathBuf>,
    /// File to append the access log to: one JSON line per request, whose `reason`
    /// says why a response is what it is (no_route, rate_limited, waf,
    /// upstream_connect_failed...).
    #[arg(long)]
    access_log: Option<PathBuf>,
    /// Log one in N requests answered below 400 (errors are always logged).
    #[arg(long, default_value_t = 1, value_name = "N")]
    access_log_sample: u64,
    /// The fields of access log lines, comma-separated (default: all of time,
    /// request_id, client, method, host, path, protocol, status, reason, waf_rule,
    /// route, duration_ms, trace_id).
    #[arg(long, value_delimiter = ',', value_name = "FIELDS")]
    access_log_fields: Vec<String>,
    /// Responses Gatehouse makes itself say why in an `x-gatehouse-reason` header
    /// (for debugging; it tells clients which guard stopped them).
    #[arg(long)]
    debug_headers: bool,
    /// Milliseconds between two analytics ticks (baselines, anomalies, the dashboard's
    /// series); 0 turns the analytics and the dashboard off.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    analytics_tick_ms: u64,
    /// Analytics ticks learned before anomalies are raised.
    #[arg(long, default_value_t = 60, value_name = "TICKS")]
    analytics_warm_up: u64,
    /// Trace requests (W3C traceparent): each request is a span of the proxy's, which
    /// continues the caller's trace or starts one, and goes upstream as the parent.
    #[arg(long)]
    tracing: bool,
    /// The share of new traces sampled (0 to 1); a continued trace keeps its caller's
    /// choice.
    #[arg(long, default_value_t = 0.01, value_name = "RATIO")]
    trace_sample: f64,
    /// Export sampled spans over OTLP/HTTP (JSON) to this URL, e.g.
    /// http://127.0.0.1:4318/v1/traces (turns --tracing on).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// A node proxy's admin address (HOST:PORT) whose east-west flows the dashboard
    /// shows: on its map, and as suggested policies. Repeatable, one per node.
    #[arg(long, value_name = "HOST:PORT")]
    flows_from: Vec<String>,
}

impl WafArgs {
    /// Loads the rule base, if there is one.
    fn base(&self) -> anyhow::Result<Option<std::sync::Arc<gatehouse_translate::waf::WafBase>>> {
        let (dir, explicit) = match &self.waf_rules {
            Some(d) => (d.clone(), true),
            None => (PathBuf::from("waf/crs"), false),
        };
        if !explicit && !dir.exists() {
            tracing::info!(
                "no WAF rule base at {}: WAF policies are refused",
                dir.display()
            );
            return Ok(None);
        }
        let base = gatehouse_translate::waf::WafBase::load(&dir)
            .map_err(|e| anyhow::anyhow!("cannot load the WAF rules: {e}"))?;
        Ok(Some(std::sync::Arc::new(base)))
    }
}

/// Settings of `run` and `controller`.
#[derive(clap::Args)]
struct RunArgs {
    /// Directory of Kubernetes manifests (YAML or JSON).
    #[arg(long, default_value = "examples/quickstart")]
    config: PathBuf,
    #[command(flatten)]
    addrs: Addrs,
    #[command(flatten)]
    waf: WafArgs,
    /// Admin listener: /healthz, /readyz, /config, /metrics.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin_addr: SocketAddr,
    /// Start an echo server for every loopback endpoint in the manifests.
    #[arg(long)]
    demo_backends: bool,
    /// Do not watch the directory for changes.
    #[arg(long)]
    no_watch: bool,
    /// Merge duplicate slashes in request paths before routing.
    #[arg(long)]
    merge_slashes: bool,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    max_body_bytes: u64,
    /// Seconds in-flight requests may run after SIGTERM.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    /// Seconds to wait for upstream response headers when the route sets no timeout.
    #[arg(long, default_value_t = 60)]
    upstream_timeout: u64,
    /// Seconds a request body may send nothing before the request ends with 408; also
    /// the grace before --body-min-rate applies (slow-body defence).
    #[arg(long, default_value_t = 20)]
    body_timeout: u64,
    /// Bytes per second a request body must average after --body-timeout, counting only
    /// the time spent waiting for the client (0: no minimum).
    #[arg(long, default_value_t = 1024)]
    body_min_rate: u64,
    /// Most connections one client address may hold open at once (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_connections_per_ip: u32,
    /// Most connections one listener may hold open at once (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_connections_per_listener: u32,
    /// Most new connections one client address may open per second (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_new_connections_per_ip: u32,
    /// Redis that counts Global rate limits for all replicas (`redis://host:port/db`).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Load balancers (CIDRs) whose connections start with a PROXY protocol header (v1
    /// or v2), which then names the client. Repeatable; never read from others.
    #[arg(long = "proxy-protocol-from", value_name = "CIDR")]
    proxy_protocol_from: Vec<gatehouse_security::ipacl::Cidr>,
    /// Read objects from the Kubernetes API instead of a directory.
    #[arg(long)]
    kubernetes: bool,
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long)]
    context: Option<String>,
    /// Watch one namespace only (default: all).
    #[arg(long)]
    namespace: Option<String>,
    /// Do not write status back to the API server.
    #[arg(long)]
    no_status: bool,
    /// Namespace of the leader-election Lease (default: POD_NAMESPACE, else default).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: POD_NAME, else host name and pid).
    #[arg(long)]
    identity: Option<String>,
    #[command(flatten)]
    mesh_ca: gatehouse::mesh::CaArgs,
    /// Serve config to remote proxies (`gatehouse run --controller URL`) on this
    /// address: a gRPC stream of deltas, acknowledged by each proxy.
    #[arg(long, value_name = "ADDR")]
    control_listen: Option<SocketAddr>,
    /// Take config from a central controller (`http://HOST:PORT`; replicas separated by
    /// commas) instead of a directory or the API; without it, keep serving the last
    /// config it sent.
    #[arg(long, value_name = "URL", conflicts_with_all = ["kubernetes", "control_listen"])]
    controller: Option<String>,
    /// The cluster this process serves: a proxy's, as the controller lists it (its
    /// endpoints are preferred over other clusters'); a controller's own --config, when
    /// it merges clusters (--cluster-config).
    #[arg(long, default_value = "default")]
    cluster: String,
    /// The zone this proxy runs in (`topology.kubernetes.io/zone`): endpoints in it are
    /// preferred over other zones' of the same cluster.
    #[arg(long, env = "GATEHOUSE_ZONE")]
    zone: Option<String>,
    /// With --control-listen: serve another cluster's manifest directory too, merged
    /// with --config (repeatable). A Service several clusters define gets every
    /// cluster's endpoints; any other object two define differently is taken from the
    /// first (--config, then in the order given).
    #[arg(
        long,
        value_name = "NAME=DIR",
        value_parser = gatehouse::multicluster::parse_cluster_config,
        requires = "control_listen"
    )]
    cluster_config: Vec<(String, PathBuf)>,
    /// With --control-listen: serve another cluster's API too, a context of the
    /// kubeconfig (--kubeconfig, else KUBECONFIG or ~/.kube/config), merged like
    /// --cluster-config (repeatable).
    #[arg(
        long,
        value_name = "NAME=CONTEXT",
        value_parser = gatehouse::multicluster::parse_cluster_context,
        requires = "control_listen"
    )]
    cluster_context: Vec<(String, String)>,
    /// File holding the token that admits this proxy to the controller.
    #[arg(long, value_name = "FILE", requires = "controller")]
    controller_token_file: Option<PathBuf>,
    /// With --control-listen: serve only proxies with a token in this file, one
    /// `TOKEN ROLE NAME` per line (ROLE gateway or node; NAME the gateway's
    /// --identity or the node's name, `*` for any). Read again every 2 s: a token taken
    /// out is revoked, and its proxy's stream closed.
    #[arg(long, value_name = "FILE", requires = "control_listen")]
    control_tokens: Option<PathBuf>,
    /// With --control-listen: serve over TLS with this certificate chain (PEM); proxies
    /// then use an `https://` URL and --controller-ca.
    #[arg(long, value_name = "FILE", requires_all = ["control_listen", "control_tls_key"])]
    control_tls_cert: Option<PathBuf>,
    /// The key of --control-tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "control_tls_cert")]
    control_tls_key: Option<PathBuf>,
    /// The CA bundle (PEM) that vouches for an `https://` controller.
    #[arg(long, value_name = "FILE", requires = "controller")]
    controller_ca: Option<PathBuf>,
    /// A certificate (PEM chain, from the mesh CA: `gatehouse ca issue`) to present to
    /// an `https://` controller over mutual TLS, read again on every connection.
    #[arg(long, value_name = "FILE", requires_all = ["controller", "controller_key"])]
    controller_cert: Option<PathBuf>,
    /// The key of --controller-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "controller_cert")]
    controller_key: Option<PathBuf>,
    /// With --control-tls-cert: ask proxies for a client certificate and check it
    /// against this CA bundle (the mesh CA's roots); its SPIFFE ID admits a proxy as a
    /// `--control-tokens` line naming it does (or, with --control-service-account, when
    /// it is the account's), and proxies without one need a token.
    #[arg(long, value_name = "FILE", requires = "control_tls_cert")]
    control_client_ca: Option<PathBuf>,
    /// With --kubernetes and --control-listen: admit proxies by their service-account
    /// token (audience `gatehouse-control`, reviewed by the API server) when it is this
    /// account's, for this role (repeatable), e.g. `gateway=gatehouse-system/gatehouse`.
    #[arg(
        long,
        value_name = "ROLE=NAMESPACE/NAME",
        value_parser = gatehouse::control_tokenreview::parse_account,
        requires = "control_listen"
    )]
    control_service_account: Vec<(String, String)>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the manifests in a directory (the embedded default), reloading on change;
    /// with --kubernetes, serve what the Kubernetes API holds instead.
    Run(RunArgs),
    /// Run as the cluster's controller: watch the Kubernetes API (in-cluster config, or
    /// --kubeconfig/KUBECONFIG), serve it, and write status. `run --kubernetes` alike.
    Controller(RunArgs),
    /// Run the mesh proxy of a node (hub-spoke), or of one pod with --sidecar-for.
    Node(gatehouse::mesh::NodeArgs),
    /// The mesh's certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Print Gatehouse's CustomResourceDefinitions (YAML) for `kubectl apply -f -`.
    Crds,
    /// Check a directory of manifests; exits non-zero with every error found.
    Validate {
        #[arg(default_value = "examples/quickstart")]
        dir: PathBuf,
        #[command(flatten)]
        addrs: Addrs,
        #[command(flatten)]
        waf: WafArgs,
    },
    /// Run the demo echo backend.
    Echo {
        #[arg(long, default_value = "127.0.0.1:9101")]
        listen: SocketAddr,
        #[arg(long, default_value = "echo")]
        name: String,
    },
    /// Web application firewall tools.
    #[command(subcommand)]
    Waf(WafCommand),
    /// Ask a running controller.
    #[command(subcommand)]
    Ctl(CtlCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the AuthorizationPolicies (YAML) that allow exactly the east-west calls the
    /// node proxies saw: one ALLOW policy per workload, a rule per caller and port,
    /// with the methods and paths seen where HTTP was read (`gatehouse node
    /// --observe-http`). Review it, apply it with --dry-run to see what it would deny
    /// (`gatehouse_mesh_authz_dry_run_denied_total`, flow verdict `would_deny`), then
    /// without.
    Suggest {
        /// A node proxy's admin listener (repeatable: one per node).
        #[arg(long, default_value = "127.0.0.1:15020")]
        admin: Vec<String>,
        /// Annotate the policies `gatehouse.dev/dry-run: "true"`.
        #[arg(long)]
        dry_run: bool,
        /// Only workloads of this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Paths a rule names before they are folded into prefixes.
        #[arg(long, default_value_t = 16)]
        max_paths: usize,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// The proxies connected to a controller: role, node, cluster, the config version
    /// each acknowledged against the one it should run, its last NACK, and its lag.
    Proxies {
        /// The controller's --control-listen address, as a URL.
        #[arg(long, default_value = "http://127.0.0.1:15010")]
        controller: String,
        /// The CA bundle (PEM) that vouches for an `https://` controller.
        #[arg(long, value_name = "FILE")]
        controller_ca: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Why one recent request (by its x-request-id) went where it went: the route, the
    /// cluster and endpoint, and the reason of its answer.
    Explain {
        /// The request id (the response's x-request-id).
        request_id: String,
        /// The proxy's admin listener.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        #[arg(long)]
        json: bool,
    },
    /// Stream the requests that match, live, as they end (like linkerd viz tap).
    Tap {
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// Only this route (as /metrics names it).
        #[arg(long)]
        route: Option<String>,
        #[arg(long)]
        host: Option<String>,
        /// Only request targets starting with this.
        #[arg(long)]
        path: Option<String>,
        #[arg(long)]
        method: Option<String>,
        /// A status class (5) or code (503).
        #[arg(long)]
        status: Option<String>,
        /// Stop after this many requests.
        #[arg(long)]
        max: Option<usize>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Authorization from observed traffic.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The busiest routes, live: request rate, success rate, p50/p99 latency, and the
    /// proxy's own answers by reason.
    Top {
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// Time between samples.
        #[arg(long, default_value = "2s", value_parser = gatehouse::mesh::parse_duration)]
        interval: Duration,
        /// Stop after this many samples (0: until stopped).
        #[arg(long, default_value_t = 0)]
        iterations: usize,
        /// One JSON array per sample.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum WafCommand {
    /// Run go-ftw regression tests (e.g. CRS's tests/regression/tests) against an
    /// in-process Gatehouse set up as CRS's CI sets up its engines; prints every
    /// failure by rule id and `N passed, N failed`. Exits non-zero on failures.
    Test {
        /// Directory of go-ftw YAML test files.
        dir: PathBuf,
        /// The Core Rule Set to load (crs-setup.conf(.example) and rules/).
        #[arg(long, default_value = "waf/crs")]
        rules: PathBuf,
        /// Overrides file (go-ftw format): cases excused, with the reason.
        #[arg(long)]
        overrides: Option<PathBuf>,
        /// Only tests whose `<rule_id>-<test_id>` match this regex.
        #[arg(long)]
        filter: Option<String>,
        /// Write the pass rate per rule file as a Markdown table to this file.
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Print every stage's verdict as it comes.
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Start a root rotation: a new root joins the trust bundle at once, and the running
    /// CA makes it sign one certificate lifetime later (when every proxy holds the new
    /// bundle); the old root stays trusted until it expires.
    Rotate {
        /// The CA directory.
        #[arg(long, default_value = "/var/lib/gatehouse/ca")]
        dir: PathBuf,
        /// Rotate the root kept in this Secret (NAMESPACE/NAME) instead, through the
        /// Kubernetes API (--kubeconfig, else KUBECONFIG or in-cluster).
        #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with = "dir")]
        secret: Option<String>,
        #[arg(long, requires = "secret")]
        kubeconfig: Option<PathBuf>,
        #[arg(long, requires = "secret")]
        context: Option<String>,
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// The new root signs at once (for a root that must go now: proxies that have
        /// not fetched the new bundle cannot check new certificates until they renew).
        #[arg(long)]
        now: bool,
    },
    /// Issue a certificate and key for a SPIFFE ID from the CA directory: for a proxy to
    /// present to the controller over mutual TLS (--controller-cert/--controller-key).
    Issue {
        /// The CA directory.
        #[arg(long, default_value = "/var/lib/gatehouse/ca")]
        dir: PathBuf,
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// The identity: `spiffe://TD/ns/NAMESPACE/sa/ACCOUNT`, or `NAMESPACE/ACCOUNT`.
        #[arg(long)]
        identity: String,
        /// How long it is valid.
        #[arg(long, default_value = "24h", value_parser = gatehouse::mesh::parse_duration)]
        ttl: Duration,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Where to write the key (PEM, mode 0600).
        #[arg(long)]
        key: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    gatehouse_proxy::listener::raise_open_files_limit();
    let node = matches!(cli.command, Command::Node(_));
    let n = cli.workers.unwrap_or_else(|| match node {
        // A mesh proxy is small: one event loop, unless asked for more.
        true => 1,
        false => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
    });
    let mut rt = match (node, n) {
        (true, 1) => tokio::runtime::Builder::new_current_thread(),
        (true, n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        (false, _) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(1);
            b
        }
    };
    rt.enable_all();
    if n >= 2 && !node {
        // The control plane keeps one runtime thread; connections go to the workers.
        match gatehouse_proxy::workers::Workers::start(n) {
            Ok(w) => {
                let _ = gatehouse::app::WORKERS.set(std::sync::Arc::new(w));
            }
            Err(e) => {
                eprintln!("error: cannot start worker threads: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Validate { dir, addrs, waf } => {
            let mut opts = addrs.translate();
            opts.waf = waf.base()?;
            print!("{}", app::validate(&dir, &opts)?);
            Ok(())
        }
        Command::Waf(WafCommand::Test {
            dir,
            rules,
            overrides,
            filter,
            markdown,
            verbose,
        }) => {
            let filter = filter
                .map(|f| regex::Regex::new(&f))
                .transpose()
                .context("--filter is not a valid regex")?;
            let report = gatehouse::waf_test::run(&gatehouse::waf_test::SuiteOptions {
                tests: dir,
                overrides,
                rules,
                filter,
                verbose,
            })
            .await?;
            print!("{report}");
            if let Some(path) = markdown {
                std::fs::write(&path, report.markdown_table())
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if report.failed() > 0 {
                anyhow::bail!("{} stages failed", report.failed());
            }
            Ok(())
        }
        Command::Echo { listen, name } => {
            let l = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            eprintln!("echo backend {name:?} on http://{listen}");
            tokio::select! {
                _ = gatehouse::echo::serve(l, name) => {}
                _ = shutdown_signal() => {}
            }
            Ok(())
        }
        Command::Crds => {
            print!(
                "{}",
                gatehouse_model::policy::crds_yaml().map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
        Command::Ctl(CtlCommand::Proxies {
            controller,
            controller_ca,
            json,
        }) => {
            print!(
                "{}",
                gatehouse::ctl::proxies(&controller, controller_ca.as_deref(), json).await?
            );
            Ok(())
        }
        Command::Ctl(CtlCommand::Explain {
            request_id,
            admin,
            json,
        }) => {
            print!(
                "{}",
                gatehouse::ctl::explain(&admin, &request_id, json).await?
            );
            Ok(())
        }
        Command::Ctl(CtlCommand::Tap {
            admin,
            route,
            host,
            path,
            method,
            status,
            max,
            json,
        }) => {
            let args = gatehouse::ctl::TapArgs {
                route,
                host,
                path,
                method,
                status,
                max,
                json,
            };
            gatehouse::ctl::tap(&admin, &args, std::io::stdout()).await
        }
        Command::Ctl(CtlCommand::Policy(PolicyCommand::Suggest {
            admin,
            dry_run,
            namespace,
            max_paths,
        })) => {
            let opts = gatehouse_telemetry::policy_suggest::SuggestOptions {
                dry_run,
                namespace,
                max_paths,
            };
            print!("{}", gatehouse::ctl::policy_suggest(&admin, &opts).await?);
            Ok(())
        }
        Command::Ctl(CtlCommand::Top {
            admin,
            interval,
            iterations,
            json,
        }) => gatehouse::ctl::top(&admin, interval, iterations, json, std::io::stdout()).await,
        Command::Controller(mut args) => {
            args.kubernetes = true;
            serve(args).await
        }
        Command::Run(args) => serve(args).await,
        Command::Node(args) => gatehouse::mesh::run_node(args, shutdown_signal()).await,
        Command::Ca(CaCommand::Rotate {
            dir,
            secret,
            kubeconfig,
            context,
            trust_domain,
            now,
        }) => {
            let place = match &secret {
                Some(secret) => {
                    let client = app::kube_client(kubeconfig.as_deref(), context).await?;
                    gatehouse::mesh_secret::rotate(&client, secret, &trust_domain, now).await?;
                    format!("Secret {secret}")
                }
                None => {
                    gatehouse_mesh::ca::CertificateAuthority::rotate_root(
                        &dir,
                        &trust_domain,
                        now,
                    )?;
                    dir.display().to_string()
                }
            };
            match now {
                true => println!("new root in {place}, signing now; the previous one stays in the trust bundle"),
                false => println!("new root in {place}, in the trust bundle now; the running CA makes it sign one certificate lifetime from now"),
            }
            Ok(())
        }
        Command::Ca(CaCommand::Issue {
            dir,
            trust_domain,
            identity,
            ttl,
            cert,
            key,
        }) => {
            let id = match identity.split_once('/') {
                _ if identity.starts_with("spiffe://") => {
                    gatehouse_mesh::identity::Identity::parse(&identity)
                }
                Some((ns, sa)) if !sa.contains('/') => Some(
                    gatehouse_mesh::identity::Identity::new(&trust_domain, ns, sa),
                ),
                _ => None,
            }
            .with_context(|| {
                format!("--identity {identity:?}: expected spiffe://TD/ns/NS/sa/SA or NS/SA")
            })?;
            let ca = gatehouse_mesh::ca::CertificateAuthority::load(&dir, &trust_domain)?;
            let (issued, key_pem) = ca.issue_with_key(&id, ttl)?;
            std::fs::write(&cert, &issued.chain_pem)
                .with_context(|| format!("cannot write {}", cert.display()))?;
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&key)
                    .and_then(|mut f| f.write_all(key_pem.as_bytes()))
                    .with_context(|| format!("cannot write {}", key.display()))?;
            }
            println!(
                "issued {id}, valid for {}s: {} and {}",
                ttl.as_secs(),
                cert.display(),
                key.display()
            );
            Ok(())
        }
    }
}

/// `run` and `controller`: serve a manifest directory or the Kubernetes API.
async fn serve(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        config,
        addrs,
        waf,
        admin_addr,
        demo_backends,
        no_watch,
        merge_slashes,
        max_body_bytes,
        drain_timeout,
        upstream_timeout,
        body_timeout,
        body_min_rate,
        proxy_protocol_from,
        redis,
        max_connections_per_ip,
        max_connections_per_listener,
        max_new_connections_per_ip,
        kubernetes,
        kubeconfig,
        context,
        namespace,
        no_status,
        lease_namespace,
        identity,
        mesh_ca,
        control_listen,
        controller,
        cluster,
        zone,
        controller_token_file,
        control_tokens,
        control_tls_cert,
        control_tls_key,
        controller_ca,
        controller_cert,
        controller_key,
        control_client_ca,
        cluster_config,
        cluster_context,
        control_service_account,
    } = args;
    if !kubernetes {
        let kube_only = [
            (
                "--kubeconfig",
                kubeconfig.is_some() && cluster_context.is_empty(),
            ),
            ("--context", context.is_some()),
            ("--namespace", namespace.is_some()),
            ("--no-status", no_status),
            ("--lease-namespace", lease_namespace.is_some()),
            ("--identity", identity.is_some() && controller.is_none()),
        ];
        if let Some((flag, _)) = kube_only.iter().find(|(_, set)| *set) {
            anyhow::bail!(
                "{flag} reads the Kubernetes API: add --kubernetes, or use `gatehouse controller`"
            );
        }
    }
    let mut translate = addrs.translate();
    translate.waf = waf.base()?;
    translate.global_rate_limits = redis.is_some();
    translate.locality = std::sync::Arc::new(gatehouse_translate::locality::Locality {
        cluster: Some(cluster.clone()),
        zone: zone.filter(|z| !z.is_empty()),
    });
    let proxy = ProxyConfig {
        waf_log: waf.waf_log.clone(),
        waf_audit_log: waf.waf_audit_log.clone(),
        security_log: waf.security_log.clone(),
        access_log: waf.access_log.clone(),
        access_log_sample: waf.access_log_sample,
        analytics_tick: (waf.analytics_tick_ms > 0)
            .then(|| Duration::from_millis(waf.analytics_tick_ms)),
        analytics_warm_up: waf.analytics_warm_up,
        analytics_flows_from: waf.flows_from.clone(),
        tracing: waf.tracing || waf.otlp_endpoint.is_some(),
        trace_sample: waf.trace_sample,
        otlp_endpoint: waf.otlp_endpoint.clone(),
        access_log_fields: waf.access_log_fields.clone(),
        debug_headers: waf.debug_headers,
        merge_slashes,
        max_body_bytes,
        drain_timeout: Duration::from_secs(drain_timeout),
        upstream_timeout: Duration::from_secs(upstream_timeout),
        body_timeout: Duration::from_secs(body_timeout.max(1)),
        body_min_rate,
        redis,
        conn_limits: gatehouse_proxy::connlimit::ConnLimits {
            per_ip: max_connections_per_ip,
            per_listener: max_connections_per_listener,
            new_per_ip_per_second: max_new_connections_per_ip,
        },
        proxy_protocol: (!proxy_protocol_from.is_empty()).then(|| {
            std::sync::Arc::new(gatehouse_security::ipacl::AccessList::new(
                &proxy_protocol_from,
                &[],
            ))
        }),
        ..ProxyConfig::default()
    };
    let identity = identity
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
    if let Some(url) = controller {
        let running = gatehouse::remote::start_remote(gatehouse::remote::RemoteOptions {
            controller: url.clone(),
            id: identity,
            token_file: controller_token_file,
            ca_file: controller_ca,
            client_cert: gatehouse_control::transport::ClientCert::of(
                controller_cert,
                controller_key,
            ),
            cluster,
            translate,
            proxy,
            admin_addr,
        })
        .await?;
        println!(
            "Gatehouse is following the controller at {url}; admin: http://{0}/readyz http://{0}/config",
            running.admin_addr
        );
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        running.shutdown().await;
        return Ok(());
    }
    let distributor = match control_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--control-listen)"))?;
            let d = gatehouse_control::server::Distributor::new(identity.clone());
            d.set_mesh_root_namespace(mesh_ca.mesh.mesh_root_namespace.clone());
            let fixed = control_tokens
                .as_deref()
                .map(gatehouse_control::auth::ProxyTokens::load)
                .transpose()?;
            if !control_service_account.is_empty() {
                if !kubernetes {
                    anyhow::bail!(
                        "--control-service-account reviews tokens through the Kubernetes API: add --kubernetes, or use `gatehouse controller`"
                    );
                }
                let client = app::kube_client(kubeconfig.as_deref(), context.clone()).await?;
                d.require(std::sync::Arc::new(
                    gatehouse::control_tokenreview::ReviewedProxies::new(
                        fixed,
                        client,
                        &control_service_account,
                    )?,
                ));
            } else if let Some(tokens) = fixed {
                d.require_tokens(tokens);
            } else {
                tracing::warn!(
                    "--control-listen without --control-tokens or --control-service-account: any proxy that reaches {addr} is served"
                );
            }
            let tls = match (&control_tls_cert, &control_tls_key) {
                (Some(cert), Some(key)) => Some(gatehouse_control::transport::ServerTls::load(
                    cert,
                    key,
                    control_client_ca.as_deref(),
                )?),
                _ => None,
            };
            let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
            d.serve(listener, tls);
            println!("Serving config to remote proxies on {addr} ({scheme})");
            Some(d)
        }
        None => None,
    };
    // Other clusters merged into what remote proxies are served.
    let mut merge_with: Vec<(String, gatehouse::multicluster::Source)> = cluster_config
        .into_iter()
        .map(|(name, dir)| (name, gatehouse::multicluster::Source::Dir(dir)))
        .collect();
    for (name, ctx) in &cluster_context {
        let source = gatehouse::multicluster::api_cluster(kubeconfig.as_deref(), ctx).await?;
        merge_with.push((name.clone(), source));
    }
    // The mesh CA of a controller that merges clusters sees every cluster's workloads.
    let merged_mesh = (distributor.is_some() && !merge_with.is_empty())
        .then(gatehouse_sources::kubernetes::KubeStore::fed);
    if kubernetes {
        let client = app::kube_client(kubeconfig.as_deref(), context).await?;
        // A controller that serves remote proxies watches what node proxies read too.
        let kinds = match distributor {
            Some(_) => gatehouse_sources::kubernetes::ALL_WATCHED.as_slice(),
            None => gatehouse_sources::kubernetes::WATCHED,
        };
        let distributor = distributor.map(|to| app::Distribute {
            to,
            cluster: cluster.clone(),
            merge_with: std::mem::take(&mut merge_with),
            mesh: merged_mesh.clone(),
        });
        let opts = app::KubeRunOptions {
            kube: gatehouse_sources::kubernetes::KubeOptions { namespace, kinds },
            translate: translate.clone(),
            proxy,
            admin_addr,
            debounce: Duration::from_millis(5),
            status: (!no_status).then(|| gatehouse_sources::lease::LeaseConfig {
                namespace: lease_namespace
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .unwrap_or_else(|| "default".into()),
                name: "gatehouse-leader".into(),
                identity,
                duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(5),
            }),
            distributor,
        };
        let running = app::start_kubernetes(client.clone(), opts).await?;
        println!(
            "Gatehouse is watching the Kubernetes API; admin: http://{0}/readyz http://{0}/config",
            running.admin_addr
        );
        let source = match merged_mesh {
            Some(store) => gatehouse::mesh::MeshSource::Merged(store, Some(client)),
            None => gatehouse::mesh::MeshSource::Kube(client),
        };
        if let Some(addr) = gatehouse::mesh::start_ca(&mesh_ca, source).await? {
            println!(
                "Mesh CA on {addr} (root: Secret {})",
                mesh_ca.mesh_ca_secret
            );
        }
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        running.shutdown().await;
        return Ok(());
    }
    // Merging clusters, the merge feeds remote proxies; else each good version of
    // --config does.
    let (distributor, merged) = match (distributor, merge_with.is_empty()) {
        (Some(d), false) => (None, Some(d)),
        (d, _) => (d, None),
    };
    let opts = RunOptions {
        config_dir: config.clone(),
        translate,
        proxy,
        admin_addr,
        watch: !no_watch,
        demo_backends,
        distributor,
    };
    let running = app::start(opts).await?;
    if let Some(d) = merged {
        let mut clusters = vec![(
            cluster.clone(),
            gatehouse::multicluster::Source::Dir(config.clone()),
        )];
        clusters.extend(merge_with);
        gatehouse::multicluster::follow(d, clusters, merged_mesh.clone())?;
    }
    let source = match merged_mesh {
        Some(store) => gatehouse::mesh::MeshSource::Merged(store, None),
        None => gatehouse::mesh::MeshSource::Dir(config.clone()),
    };
    if let Some(addr) = gatehouse::mesh::start_ca(&mesh_ca, source).await? {
        println!(
            "Mesh CA on {addr} (root: {})",
            mesh_ca
                .mesh_ca_dir
                .join(gatehouse_mesh::ca::ROOT_CERT)
                .display()
        );
    }
    let active = running.dataplane.current();
    println!(
        "{}",
        gatehouse::banner::banner(
            &config.display().to_string(),
            &active.snapshot,
            running.admin_addr
        )
    );
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
