// Command probed serves netprobe.v1.ProbeService over gRPC, with the
// standard health service and server reflection.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/netprobe/netprobe/internal/batchwriter"
	"github.com/netprobe/netprobe/internal/buildinfo"
	"github.com/netprobe/netprobe/internal/probecli"
	"github.com/netprobe/netprobe/internal/server"
	"github.com/netprobe/netprobe/service"
)

// config is probed's command line; every flag has an environment twin.
type config struct {
	Version         kong.VersionFlag `help:"Print probed's version and exit."`
	Listen          string           `default:"localhost:7070" env:"NETPROBE_LISTEN" group:"Serving" help:"Address to serve gRPC on: host:port, or unix:PATH for a Unix socket. The default serves this machine only."`
	Plaintext       bool             `env:"NETPROBE_PLAINTEXT" group:"Serving" help:"Serve without TLS on a network address. Without it, probed refuses to serve plaintext anywhere but on loopback or a Unix socket."`
	TLSCert         string           `name:"tls-cert" env:"NETPROBE_TLS_CERT" type:"path" group:"Serving" help:"Serve TLS with this certificate (PEM); reloaded when the file changes or on SIGHUP."`
	TLSKey          string           `name:"tls-key" env:"NETPROBE_TLS_KEY" type:"path" group:"Serving" help:"The private key (PEM) of --tls-cert."`
	TLSClientCA     string           `name:"tls-client-ca" env:"NETPROBE_TLS_CLIENT_CA" type:"path" group:"Serving" help:"Require client certificates signed by these CAs (PEM): mutual TLS. The certificate's common name is the caller's identity."`
	TokensFile      string           `env:"NETPROBE_TOKENS_FILE" type:"path" group:"Serving" help:"Require a bearer token from this file (one \"NAME TOKEN\" a line) on every call but health checks. NAME is the caller's identity."`
	ShutdownGrace   time.Duration    `default:"10s" env:"NETPROBE_SHUTDOWN_GRACE" group:"Serving" help:"On SIGINT or SIGTERM, how long in-flight calls get to finish before they are cut off."`
	PprofAddr       string           `env:"NETPROBE_PPROF_ADDR" group:"Serving" placeholder:"HOST:PORT" help:"Serve Go's profiler (net/http/pprof, /debug/pprof/) on this loopback address, for measuring probed under load; off by default. A profile, trace or delta profile may ask for ${max_profile_seconds} seconds at most."`
	PprofAnyAddr    bool             `name:"pprof-allow-non-loopback" env:"NETPROBE_PPROF_ALLOW_NON_LOOPBACK" group:"Serving" help:"Let --pprof-addr be an address other than loopback. The profiler shows the process's memory and can keep its CPU busy, to anyone who reaches it: without this flag probed refuses to start."`
	MetricsAddr     string           `default:"localhost:7071" env:"NETPROBE_METRICS_ADDR" group:"Serving" help:"Serve Prometheus metrics over HTTP on this address: /metrics, /healthz, blackbox_exporter's /probe and a page at /; empty turns them off."`
	MetricsConns    int              `default:"${metrics_max_conns}" env:"NETPROBE_METRICS_MAX_CONNECTIONS" name:"metrics-max-connections" group:"Prometheus" help:"Most connections open at once on --metrics-addr; one more is closed as it is accepted."`
	MetricsConnsSrc int              `default:"${metrics_max_source_conns}" env:"NETPROBE_METRICS_MAX_CONNECTIONS_PER_SOURCE" name:"metrics-max-connections-per-source" group:"Prometheus" help:"Most connections open at once on --metrics-addr from one source (an IPv4 address or IPv6 /64); one more is closed as it is accepted."`
	MetricsIdle     time.Duration    `default:"${metrics_idle_timeout}" env:"NETPROBE_METRICS_IDLE_TIMEOUT" name:"metrics-idle-timeout" group:"Prometheus" help:"Close a keep-alive connection of --metrics-addr idle this long."`
	PublicStatus    bool             `env:"NETPROBE_PUBLIC_STATUS" group:"Prometheus" help:"Serve /metrics, the page at / and its reports (/probes/ID) to anyone. Without it, they need the credentials /probe needs (a bearer token with --tokens-file, a user with --web-config-file's basic_auth_users). /healthz needs none either way."`
	Allow           []string         `sep:";" env:"NETPROBE_ALLOW" placeholder:"RULE" group:"Target policy" help:"Allow only targets some allow rule covers (repeatable; ; between rules in the environment). RULE is ADDRESSES [port PORTS], such as \"10.0.0.0/8,2001:db8::/32 port 443,8000-8999\"."`
	Deny            []string         `sep:";" env:"NETPROBE_DENY" placeholder:"RULE" group:"Target policy" help:"Deny targets this rule covers (repeatable), before any allow rule."`
	AllowSource     []string         `sep:";" env:"NETPROBE_ALLOW_SOURCE" placeholder:"ADDR" group:"Target policy" help:"Let probes bind this source address, or any of this prefix (repeatable): Target.source_address. None by default: a request that asks for one is INVALID_ARGUMENT."`
	ClientIdentity  []string         `name:"client-identity" sep:";" env:"NETPROBE_CLIENT_IDENTITY" placeholder:"NAME=CERT,KEY" group:"Probing" help:"A client certificate and key (PEM files) probes may present to their targets as NAME (TlsOptions.client_identity), to callers the policy grants it (\"identity NAME\", \"caller CALLER identity NAME\"); repeatable, reloaded like --tls-cert."`
	PolicyFile      string           `env:"NETPROBE_POLICY_FILE" type:"path" group:"Target policy" help:"Read rules from this file: \"allow RULE\", \"deny RULE\", \"caller NAME allow RULE\", and the client identities callers may present: \"identity ID\" (anyone), \"caller NAME identity ID\"."`
	DefaultTimeout  time.Duration    `default:"${default_timeout}" env:"NETPROBE_DEFAULT_TIMEOUT" group:"Limits" help:"Probe timeout when a request sets none."`
	MaxTimeout      time.Duration    `default:"${max_timeout}" env:"NETPROBE_MAX_TIMEOUT" group:"Limits" help:"Largest probe timeout a request may ask for, which bounds a Fetch too; more is INVALID_ARGUMENT."`
	MaxPayloadBytes int              `default:"${max_payload_bytes}" env:"NETPROBE_MAX_PAYLOAD_BYTES" group:"Limits" help:"Largest Fetch payload a request may carry, in bytes (default 1 MiB); it also sizes the largest request message."`
	MaxFetchBytes   uint64           `default:"${max_fetch_bytes}" env:"NETPROBE_MAX_FETCH_BYTES" group:"Limits" help:"Most bytes one Fetch may receive, in bytes (default 64 MiB); also the default for requests that set no max_bytes."`
	MaxInFlight     int              `default:"${max_in_flight}" env:"NETPROBE_MAX_IN_FLIGHT" group:"Limits" help:"Most probes running at once; more are RESOURCE_EXHAUSTED at once, never queued."`
	MaxPerCaller    int              `default:"${max_in_flight_per_caller}" env:"NETPROBE_MAX_IN_FLIGHT_PER_CALLER" name:"max-in-flight-per-caller" group:"Limits" help:"Most probes one caller may run at once (a caller is a token or certificate name, or else a peer's IPv4 address or IPv6 /64)."`
	MaxSweepConc    int              `default:"${max_sweep_concurrency}" env:"NETPROBE_MAX_SWEEP_CONCURRENCY" name:"max-sweep-concurrency" group:"Limits" help:"Most probes one Sweep runs at once; a Sweep asking for more gets this many."`
	MaxSweepTargets int              `default:"${max_sweep_targets}" env:"NETPROBE_MAX_SWEEP_TARGETS" group:"Limits" help:"Most entries one Sweep may list; more is INVALID_ARGUMENT."`
	Rate            float64          `default:"${rate}" env:"NETPROBE_RATE" group:"Limits" help:"Probes a second each caller may start, on average."`
	Burst           int              `default:"${burst}" env:"NETPROBE_BURST" group:"Limits" help:"Probes a caller may start at once, above --rate."`
	MaxStreams      int              `default:"${max_streams_per_connection}" env:"NETPROBE_MAX_STREAMS_PER_CONNECTION" name:"max-streams-per-connection" group:"Limits" help:"Most calls one client connection runs at once (HTTP/2 MAX_CONCURRENT_STREAMS); more wait in the client."`
	MaxHeaderBytes  int              `default:"${max_header_bytes}" env:"NETPROBE_MAX_HEADER_BYTES" group:"Limits" help:"Largest header list a call may send, in bytes (HTTP/2 MAX_HEADER_LIST_SIZE); a larger one resets the stream."`
	MaxResets       int              `default:"${max_stream_resets}" env:"NETPROBE_MAX_STREAM_RESETS" name:"max-stream-resets" group:"Limits" help:"Streams a connection may cancel, or have refused, in a burst; a tenth of that comes back each second. Past it the connection is closed with a GOAWAY (ENHANCE_YOUR_CALM): the HTTP/2 rapid reset attack."`
	MaxReads        int              `default:"${max_reads_per_caller}" env:"NETPROBE_MAX_READS_PER_CALLER" name:"max-reads-per-caller" group:"Limits" help:"Most health check requests of one caller read at once; more are RESOURCE_EXHAUSTED. Before their request is read, probes are held to --max-in-flight-per-caller, Sweeps to --max-sweeps-per-caller, streams that stay open to --max-watches-per-caller."`
	MaxWatchesPer   int              `default:"${max_watches_per_caller}" env:"NETPROBE_MAX_WATCHES_PER_CALLER" name:"max-watches-per-caller" group:"Limits" help:"Most streams one caller may hold open that are not probes (health Watch, reflection); more are RESOURCE_EXHAUSTED."`
	MaxWatches      int              `default:"${max_watches}" env:"NETPROBE_MAX_WATCHES" group:"Limits" help:"Most streams all callers together may hold open that are not probes (health Watch, reflection); more are RESOURCE_EXHAUSTED."`
	MaxSweepsPer    int              `default:"${max_sweeps_per_caller}" env:"NETPROBE_MAX_SWEEPS_PER_CALLER" name:"max-sweeps-per-caller" group:"Limits" help:"Most Sweeps one caller may run at once (each holds its request, up to --max-payload-bytes plus 64 KiB, while it runs); more are RESOURCE_EXHAUSTED."`
	MaxSweeps       int              `default:"${max_sweeps}" env:"NETPROBE_MAX_SWEEPS" group:"Limits" help:"Most Sweeps all callers together may run at once; more are RESOURCE_EXHAUSTED."`
	MaxConns        int              `default:"${max_connections}" env:"NETPROBE_MAX_CONNECTIONS" name:"max-connections" group:"Limits" help:"Most gRPC connections served at once; one more is closed as it is accepted."`
	MaxConnsPer     int              `default:"${max_connections_per_source}" env:"NETPROBE_MAX_CONNECTIONS_PER_SOURCE" name:"max-connections-per-source" group:"Limits" help:"Most gRPC connections served at once from one IPv4 address or IPv6 /64; one more is closed as it is accepted."`
	AuthTimeout     time.Duration    `default:"${auth_timeout}" env:"NETPROBE_AUTH_TIMEOUT" group:"Limits" help:"How long a gRPC connection may stay open, with no stream running, without an authenticated call (health checks do not count when --tokens-file is set); then it is closed with a GOAWAY."`
	KeepaliveMin    time.Duration    `default:"${keepalive_min_time}" env:"NETPROBE_KEEPALIVE_MIN_TIME" name:"keepalive-min-time" group:"Limits" help:"Shortest interval between client keepalive pings; a client pinging more often is disconnected."`
	WebConfigFile   string           `env:"NETPROBE_WEB_CONFIG_FILE" type:"path" group:"Prometheus" help:"Serve --metrics-addr with this exporter-toolkit web configuration: TLS, client certificates, basic auth users (as Prometheus exporters take it). A scraper of /probe is then its basic auth user, or its client certificate's common name."`
	ModulesFile     string           `env:"NETPROBE_MODULES_FILE" type:"path" group:"Prometheus" help:"Serve /probe (blackbox_exporter's multi-target endpoint, on --metrics-addr) with the modules of this file, in blackbox_exporter's format: its tcp modules run, those of its other probers are listed as not run. Reloaded when it changes or on SIGHUP; a file that does not load leaves the modules as they were. Without it: tcp_connect, tls_connect, udp and PROTO_starttls."`
	CheckModules    string           `type:"path" group:"Prometheus" placeholder:"PATH" help:"Check a module file, say which modules netprobe runs and which it does not, and exit (1 if it does not load)."`
	ScrapeOffset    time.Duration    `default:"${scrape_timeout_offset}" env:"NETPROBE_SCRAPE_TIMEOUT_OFFSET" name:"scrape-timeout-offset" group:"Prometheus" help:"Taken off a scrape's timeout (X-Prometheus-Scrape-Timeout-Seconds) for its probe's, so that the answer arrives in time."`
	ScrapeRate      float64          `default:"${scrape_rate}" env:"NETPROBE_SCRAPE_RATE" group:"Prometheus" help:"Probes a second each scraper may start through /probe, on average: its targets divided by its scrape interval (1,500 targets every 15s is 100)."`
	ScrapeBurst     int              `default:"${scrape_burst}" env:"NETPROBE_SCRAPE_BURST" group:"Prometheus" help:"Probes a scraper may start at once through /probe, above --scrape-rate: Prometheus may scrape all its targets together."`
	DNSServer       string           `name:"dns-server" env:"NETPROBE_DNS_SERVER" placeholder:"HOST:PORT" group:"Probing" help:"Send every DNS query to this server instead of the ones in /etc/resolv.conf (the hosts file is still read first)."`
	ServicesFile    string           `default:"/etc/services" env:"NETPROBE_SERVICES_FILE" type:"path" group:"Probing" help:"Services database for service names; when it is missing or lacks a name, a built-in table answers."`
	LogLevel        string           `default:"info" enum:"debug,info,warn,error" env:"NETPROBE_LOG_LEVEL" group:"Logging" help:"Log level: debug, info, warn or error. Info logs one audit line per probe."`
	LogFormat       string           `default:"text" enum:"text,json" env:"NETPROBE_LOG_FORMAT" group:"Logging" help:"Log format: text or json (both on stderr)."`
}

const description = `probed answers network probes over gRPC: netprobe.v1.ProbeService (Connect, Fetch, ResolveService), grpc.health.v1.Health and server reflection, so "grpcurl -plaintext localhost:7070 list" works with no proto files at hand.

A probe that ran and failed is a result: the call returns OK and the response carries a ProbeError with the stage and reason. gRPC errors mean the call itself was refused (INVALID_ARGUMENT) or abandoned.`

// vars are the flags' defaults, from the packages that apply them, and
// the version --version prints.
var vars = kong.Vars{
	"version":                    buildinfo.Version(),
	"default_timeout":            service.DefaultTimeout.String(),
	"max_timeout":                service.DefaultMaxTimeout.String(),
	"max_payload_bytes":          strconv.Itoa(service.DefaultMaxPayloadBytes),
	"max_fetch_bytes":            strconv.Itoa(service.DefaultMaxFetchBytes),
	"max_sweep_concurrency":      strconv.Itoa(service.DefaultMaxSweepConcurrency),
	"max_sweep_targets":          strconv.Itoa(service.DefaultMaxSweepTargets),
	"max_in_flight":              strconv.Itoa(server.DefaultMaxInFlight),
	"max_in_flight_per_caller":   strconv.Itoa(server.DefaultMaxInFlightPerCaller),
	"rate":                       strconv.Itoa(server.DefaultRate),
	"burst":                      strconv.Itoa(server.DefaultBurst),
	"keepalive_min_time":         server.DefaultKeepaliveMinTime.String(),
	"max_streams_per_connection": strconv.Itoa(server.DefaultMaxStreamsPerConnection),
	"max_header_bytes":           strconv.Itoa(server.DefaultMaxHeaderBytes),
	"max_stream_resets":          strconv.Itoa(server.DefaultMaxStreamResets),
	"max_reads_per_caller":       strconv.Itoa(server.DefaultMaxReadsPerCaller),
	"max_watches_per_caller":     strconv.Itoa(server.DefaultMaxWatchesPerCaller),
	"max_watches":                strconv.Itoa(server.DefaultMaxWatches),
	"max_sweeps_per_caller":      strconv.Itoa(server.DefaultMaxSweepsPerCaller),
	"max_sweeps":                 strconv.Itoa(server.DefaultMaxSweeps),
	"max_connections":            strconv.Itoa(server.DefaultMaxConnections),
	"max_connections_per_source": strconv.Itoa(server.DefaultMaxConnectionsPerSource),
	"auth_timeout":               server.DefaultAuthTimeout.String(),
	"scrape_timeout_offset":      server.DefaultScrapeTimeoutOffset.String(),
	"scrape_rate":                strconv.Itoa(server.DefaultScrapeRate),
	"scrape_burst":               strconv.Itoa(server.DefaultScrapeBurst),
	"metrics_max_conns":          strconv.Itoa(server.DefaultMetricsMaxConns),
	"metrics_max_source_conns":   strconv.Itoa(server.DefaultMetricsMaxSourceConns),
	"metrics_idle_timeout":       server.DefaultMetricsIdleTimeout.String(),
	"max_profile_seconds":        strconv.Itoa(maxProfileSeconds),
}

func main() {
	// The container image holds one binary for both commands: called as
	// probe (a link to probed), it is the CLI.
	if filepath.Base(os.Args[0]) == "probe" {
		os.Exit(probecli.Main())
	}
	var cfg config
	kong.Parse(&cfg, kong.Name("probed"), kong.Description(description), kong.UsageOnError(), vars)
	if cfg.CheckModules != "" {
		os.Exit(checkModules(cfg, os.Stdout, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, cfg, os.Stderr)
	stop()
	os.Exit(code)
}

// run serves until ctx is done, then drains; it returns the exit code.
func run(ctx context.Context, cfg config, stderr io.Writer) int {
	// The log, one audit line a probe, is written in batches: a write
	// each cost a quarter of the probes' throughput. Lines wait at most
	// logInterval, and none is dropped (see batchwriter).
	sink := batchwriter.New(stderr, logInterval, logBuffer)
	defer sink.Close()
	logger := newLogger(cfg, sink)
	if err := serve(ctx, cfg, logger, sink); err != nil {
		logger.Error("probed failed", "err", err)
		return 1
	}
	return 0
}

// The log's batching: how long a line may wait, and how many bytes may
// wait before a probe waits for the log instead.
const (
	logInterval = 100 * time.Millisecond
	logBuffer   = 1 << 20
)

func newLogger(cfg config, w io.Writer) *slog.Logger {
	var level slog.Level
	// The enum tag has already checked the value.
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(ctx context.Context, cfg config, logger *slog.Logger, sink *batchwriter.Writer) error {
	if cfg.TLSCert == "" && cfg.TLSKey == "" && !cfg.Plaintext && !isLocal(cfg.Listen) {
		return fmt.Errorf("refusing to serve plaintext on %s: give --tls-cert and --tls-key, or --plaintext to accept it", cfg.Listen)
	}
	lis, err := listen(cfg.Listen)
	if err != nil {
		return err
	}
	defer lis.Close()
	self := []net.Addr{lis.Addr()}
	var metricsLis net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLis, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		defer metricsLis.Close()
		self = append(self, metricsLis.Addr())
	}
	// The profiler's listener is the server's own too: the target policy
	// denies it to probes.
	var pprofLis net.Listener
	if cfg.PprofAddr != "" {
		if pprofLis, err = listenPprof(cfg.PprofAddr, cfg.PprofAnyAddr); err != nil {
			return err
		}
		defer pprofLis.Close()
		self = append(self, pprofLis.Addr())
	}
	if cfg.WebConfigFile != "" {
		if err := web.Validate(cfg.WebConfigFile); err != nil {
			return fmt.Errorf("web config: %w", err)
		}
	}
	scfg := cfg.serverConfig(logger, self)
	scfg.LogStats = sink.Stats
	srv, err := server.New(scfg)
	if err != nil {
		return err
	}

	// SIGHUP reloads what can be reloaded (systemd's reload sends it); it
	// never ends probed.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go reloadOnHUP(ctx, hup, srv, logger)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	attrs := []any{"addr", lis.Addr().String(), "tls", srv.TLS(), "mtls", srv.MutualTLS(), "tokens", srv.Tokens()}
	var msrv *server.MetricsServer
	if metricsLis != nil {
		msrv = srv.NewMetricsServer(context.WithoutCancel(ctx))
		go func() {
			if err := msrv.Serve(metricsLis); err != nil {
				logger.Error("metrics server failed", "err", err)
			}
		}()
		defer msrv.Stop()
		attrs = append(attrs, "metrics_addr", metricsLis.Addr().String())
	}
	if pprofLis != nil {
		defer servePprof(pprofLis, logger)()
		attrs = append(attrs, "pprof_addr", pprofLis.Addr().String())
	}
	logger.Info("serving", attrs...)
	logger.Info("target policy", "rules", srv.PolicyRules())

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// Scrapes in flight get the grace the gRPC calls get; the metrics
	// listener answers (health NOT_SERVING, new scrapes 503) until both
	// are done.
	var scrapes sync.WaitGroup
	if msrv != nil {
		scrapes.Go(func() { msrv.Drain(cfg.ShutdownGrace) })
	}
	srv.Drain(cfg.ShutdownGrace)
	scrapes.Wait()
	if err := <-served; err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// serverConfig is the server's configuration from the flags; self lists
// the addresses probed answers on.
func (cfg config) serverConfig(logger *slog.Logger, self []net.Addr) server.Config {
	rules := make([]string, 0, len(cfg.Deny)+len(cfg.Allow))
	for _, r := range cfg.Deny {
		rules = append(rules, "deny "+r)
	}
	for _, r := range cfg.Allow {
		rules = append(rules, "allow "+r)
	}
	return server.Config{
		TLSCert:                 cfg.TLSCert,
		TLSKey:                  cfg.TLSKey,
		TLSClientCA:             cfg.TLSClientCA,
		TokensFile:              cfg.TokensFile,
		PolicyRules:             rules,
		PolicyFile:              cfg.PolicyFile,
		AllowSource:             cfg.AllowSource,
		ClientIdentities:        cfg.ClientIdentity,
		Self:                    self,
		DefaultTimeout:          cfg.DefaultTimeout,
		MaxTimeout:              cfg.MaxTimeout,
		MaxPayloadBytes:         cfg.MaxPayloadBytes,
		MaxFetchBytes:           cfg.MaxFetchBytes,
		MaxSweepConcurrency:     cfg.MaxSweepConc,
		MaxSweepTargets:         cfg.MaxSweepTargets,
		MaxInFlight:             cfg.MaxInFlight,
		MaxInFlightPerCaller:    cfg.MaxPerCaller,
		Rate:                    cfg.Rate,
		Burst:                   cfg.Burst,
		KeepaliveMinTime:        cfg.KeepaliveMin,
		MaxStreamsPerConnection: cfg.MaxStreams,
		MaxHeaderBytes:          cfg.MaxHeaderBytes,
		MaxStreamResets:         cfg.MaxResets,
		MaxReadsPerCaller:       cfg.MaxReads,
		MaxWatchesPerCaller:     cfg.MaxWatchesPer,
		MaxWatches:              cfg.MaxWatches,
		MaxSweepsPerCaller:      cfg.MaxSweepsPer,
		MaxSweeps:               cfg.MaxSweeps,
		MaxConnections:          cfg.MaxConns,
		MaxConnectionsPerSource: cfg.MaxConnsPer,
		AuthTimeout:             cfg.AuthTimeout,
		ModulesFile:             cfg.ModulesFile,
		WebConfigFile:           cfg.WebConfigFile,
		ScrapeTimeoutOffset:     cfg.ScrapeOffset,
		ScrapeRate:              cfg.ScrapeRate,
		ScrapeBurst:             cfg.ScrapeBurst,
		MetricsMaxConns:         cfg.MetricsConns,
		MetricsMaxSourceConns:   cfg.MetricsConnsSrc,
		MetricsIdleTimeout:      cfg.MetricsIdle,
		PublicStatus:            cfg.PublicStatus,
		DNSServer:               cfg.DNSServer,
		ServicesFile:            cfg.ServicesFile,
		Logger:                  logger,
	}
}

// isLocal reports whether a --listen address can be reached only from this
// machine: a Unix socket, localhost or a loopback address.
func isLocal(listen string) bool {
	if strings.HasPrefix(listen, "unix:") {
		return true
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return host == "localhost" || (err == nil && ip.IsLoopback())
}

// reloadOnHUP reloads the server's files on each SIGHUP until ctx ends.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, srv *server.Server, logger *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := srv.Reload(); err != nil {
				logger.Error("SIGHUP: reloading failed; keeping what was loaded", "err", err)
			}
		}
	}
}

// listen opens the gRPC listener: "unix:PATH" for a Unix socket, else TCP.
func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		lis, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		return lis, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return lis, nil
}

// checkModules is --check-modules: it loads the file as the server would
// and says what it found. It returns the exit code.
func checkModules(cfg config, stdout, stderr io.Writer) int {
	set, warnings, err := server.CheckModules(cfg.CheckModules, cfg.serverConfig(nil, nil))
	if err != nil {
		fmt.Fprintf(stderr, "probed: %v\n", err)
		return 1
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "probed: warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: %d modules netprobe runs: %s\n", cfg.CheckModules, len(set.Modules), strings.Join(set.Names(), ", "))
	return 0
}

// maxProfileSeconds caps the seconds a CPU profile, a trace or a delta
// profile may ask for (?seconds=N): the profiler takes one CPU profile or
// trace at a time, and one asked for a day would hold it for a day.
const maxProfileSeconds = 60

// listenPprof opens the profiler's listener, on a loopback address unless
// anyAddr: the profiler shows the process's memory (the tokens it holds
// among it) and can keep its CPU busy.
func listenPprof(addr string, anyAddr bool) (net.Listener, error) {
	refuse := fmt.Errorf("refusing to serve the profiler on %s, which is not a loopback address: anyone who reaches it reads probed's memory; give a loopback address, or --pprof-allow-non-loopback to accept it", addr)
	if !anyAddr && !isLocal(addr) {
		return nil, refuse
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof: %w", err)
	}
	// A name, localhost included, is judged by the address it gave.
	if a, ok := lis.Addr().(*net.TCPAddr); !anyAddr && (!ok || !a.IP.IsLoopback()) {
		lis.Close()
		return nil, refuse
	}
	return lis, nil
}

// servePprof serves net/http/pprof's handlers on lis, on a mux of their
// own (not the default one, which other packages may add to), until stop.
func servePprof(lis net.Listener, logger *slog.Logger) (stop func()) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{
		Handler:           capProfileSeconds(mux),
		ReadHeaderTimeout: 10 * time.Second,
		// An answer has this long to be written; net/http/pprof adds the
		// duration a profile or trace asks for, which capProfileSeconds
		// bounds.
		WriteTimeout: 30 * time.Second,
		IdleTimeout:  time.Minute,
	}
	go func() {
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			logger.Error("pprof server failed", "err", err)
		}
	}()
	return func() { srv.Close() }
}

// capProfileSeconds refuses, 400, a profile or trace that asks for more
// than maxProfileSeconds: the value net/http/pprof reads (the form's
// "seconds"), as a number of seconds.
func capProfileSeconds(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sec, err := strconv.ParseFloat(r.FormValue("seconds"), 64); err == nil && sec > maxProfileSeconds {
			http.Error(w, fmt.Sprintf("seconds: a profile or trace takes %d seconds at most (probed's cap)", maxProfileSeconds), http.StatusBadRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}
