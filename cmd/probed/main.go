// Command probed serves netprobe.v1.ProbeService over gRPC, with the
// standard health service and server reflection.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/spf13/cobra"

	"github.com/netprobe/netprobe/internal/batchwriter"
	"github.com/netprobe/netprobe/internal/buildinfo"
	"github.com/netprobe/netprobe/internal/exporter"
	"github.com/netprobe/netprobe/internal/gcfloor"
	"github.com/netprobe/netprobe/internal/probecli"
	"github.com/netprobe/netprobe/internal/server"
	"github.com/netprobe/netprobe/internal/settings"
)

// config is probed's command line: its own settings, then the server's.
// Each is declared once, by its field's tags (see internal/settings), and
// docs/deploying.md's table of flags is made from them.
type config struct {
	Listen        string        `flag:"listen" env:"NETPROBE_LISTEN" default:"localhost:7070" group:"Serving" help:"Address to serve gRPC on: HOST:PORT, or unix:PATH for a Unix socket. The default serves this machine only."`
	Plaintext     bool          `flag:"plaintext" env:"NETPROBE_PLAINTEXT" group:"Serving" help:"Serve without TLS on a network address. Without it, probed refuses to serve plaintext anywhere but on loopback or a Unix socket."`
	MetricsAddr   string        `flag:"metrics-addr" env:"NETPROBE_METRICS_ADDR" default:"localhost:7071" group:"Serving" help:"Serve HTTP on this address: /metrics, /healthz, blackbox_exporter's /probe and a page at /; empty turns them off."`
	ShutdownGrace time.Duration `flag:"shutdown-grace" env:"NETPROBE_SHUTDOWN_GRACE" default:"10s" group:"Serving" help:"On SIGINT or SIGTERM, how long in-flight calls and scrapes get to finish before they are cut off."`
	PprofAddr     string        `flag:"pprof-addr" env:"NETPROBE_PPROF_ADDR" group:"Serving" help:"Serve Go's profiler (net/http/pprof, /debug/pprof/) on this loopback HOST:PORT, for measuring probed under load; off by default. A profile, trace or delta profile may ask for 60 seconds at most."`
	PprofAnyAddr  bool          `flag:"pprof-allow-non-loopback" env:"NETPROBE_PPROF_ALLOW_NON_LOOPBACK" group:"Serving" help:"Let --pprof-addr be an address other than loopback. The profiler shows the process's memory and can keep its CPU busy, to anyone who reaches it: without this flag probed refuses to start."`
	GCHeapFloor   uint64        `flag:"gc-heap-floor" env:"NETPROBE_GC_HEAP_FLOOR" default:"16777216" group:"Serving" help:"Keep the garbage collector's heap goal at or above this many bytes (16 MiB; a plain number of bytes, 4 MiB to 1 GiB), however little of the heap is live: each probe allocates about 9 KiB and drops it, and with a few MiB live the collector ran 22 times a second under load. probed raises GOGC to reach it, and lowers it as the live heap grows, never below the GOGC it started with (a GOGC you set is the least it goes to); GOGC=off is left alone, and the floor keeps to half of GOMEMLIMIT. 0 turns it off. /metrics shows the result: go_gc_gogc_percent, go_memstats_next_gc_bytes."`
	Allow         []string      `flag:"allow" env:"NETPROBE_ALLOW" sep:";" group:"Target policy" help:"Allow only targets some allow rule covers (repeatable; ; between rules in the environment). RULE is ADDRESSES [port PORTS], such as \"10.0.0.0/8,2001:db8::/32 port 443,8000-8999\"."`
	Deny          []string      `flag:"deny" env:"NETPROBE_DENY" sep:";" group:"Target policy" help:"Deny targets this rule covers (repeatable), before any allow rule."`
	server.Config
	CheckModules string `flag:"check-modules" group:"Prometheus" help:"Check the module file at this path, say which modules netprobe runs and which it does not, and exit (1 if it does not load)."`
	LogLevel     string `flag:"log-level" env:"NETPROBE_LOG_LEVEL" default:"info" group:"Logging" help:"Log level: debug, info, warn or error. Info logs one audit line per probe."`
	LogFormat    string `flag:"log-format" env:"NETPROBE_LOG_FORMAT" default:"text" group:"Logging" help:"Log format: text or json (both on stderr)."`
}

const description = `probed answers network probes over gRPC: netprobe.v1.ProbeService (Connect, Fetch, ResolveService, Sweep, Describe), grpc.health.v1.Health and server reflection, so "grpcurl -plaintext localhost:7070 list" works with no proto files at hand.

A probe that ran and failed is a result: the call returns OK and the response carries a ProbeError with the stage and reason. gRPC errors mean the call itself was refused (INVALID_ARGUMENT, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAUTHENTICATED) or abandoned.

Every file probed reads (certificates, policy, tokens, modules, web config) is read again when it changes, on SIGHUP and on POST /-/reload to the metrics listener; one that no longer loads leaves what it held in use.

Every flag has an environment twin, read when the flag is not given.`

func main() {
	// The container image holds one binary for both commands: called as
	// probe (a link to probed), it is the CLI.
	if filepath.Base(os.Args[0]) == "probe" {
		os.Exit(probecli.Main())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := command(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command runs probed's command line args; it returns the exit code.
func command(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var cfg config
	code := 0
	cmd := &cobra.Command{
		Use:           "probed",
		Short:         "Serve network probes over gRPC",
		Long:          description,
		Version:       buildinfo.Version(),
		Args:          cobra.NoArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(*cobra.Command, []string) error {
			if cfg.CheckModules != "" {
				code = checkModules(cfg, stdout, stderr)
				return nil
			}
			code = run(ctx, cfg, stderr)
			return nil
		},
	}
	// As probe says its own (deploy/image/check compares both with the
	// image's labels).
	cmd.SetVersionTemplate("probed version {{.Version}}\n")
	fs := cmd.Flags()
	fs.SortFlags = false
	list, err := settings.Register(fs, &cfg)
	if err != nil {
		panic(err) // the tags of config are wrong: every test fails
	}
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if err := settings.Environ(fs, list, getenv); err != nil {
			return err
		}
		return cfg.check()
	}
	cmd.SetUsageFunc(func(c *cobra.Command) error {
		_, err := fmt.Fprintf(c.OutOrStderr(), "Usage:\n  %s\n\n%s", c.UseLine(), settings.Usage(c.Flags()))
		return err
	})
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(stderr, "probed: %v\nRun \"probed --help\" for usage.\n", err)
		return 2
	}
	return code
}

// check refuses values the flags' types let through.
func (cfg config) check() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil || !slices.Contains([]string{"debug", "info", "warn", "error"}, strings.ToLower(cfg.LogLevel)) {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", cfg.LogLevel)
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", cfg.LogFormat)
	}
	if f := cfg.GCHeapFloor; f != 0 && (f < minGCHeapFloor || f > maxGCHeapFloor) {
		return fmt.Errorf("--gc-heap-floor %d: want 0 (off) or %d to %d bytes (4 MiB to 1 GiB): Go's heap goal is 4 MiB at the least already, and more than 1 GiB is a typo or GOGC's to set", f, minGCHeapFloor, maxGCHeapFloor)
	}
	return nil
}

// The bounds of --gc-heap-floor.
const (
	minGCHeapFloor = 4 << 20
	maxGCHeapFloor = 1 << 30
)

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
	// check has already refused a level that does not parse.
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
	setMemoryLimit(logger)
	if cfg.GCHeapFloor > 0 {
		floor := gcfloor.Start(cfg.GCHeapFloor)
		defer floor.Stop()
		// GOGC as the floor set it: "off" when GOGC=off left it alone.
		gogc := any(floor.Percent())
		if floor.Percent() < 0 {
			gogc = "off"
		}
		logger.Info("gc heap floor", "floor_bytes", cfg.GCHeapFloor, "gogc", gogc)
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
	go reloadOnHUP(ctx, hup, srv)

	var msrv *exporter.Server
	if metricsLis != nil {
		// Its web configuration is checked before anything is served.
		if msrv, err = srv.NewMetricsServer(context.WithoutCancel(ctx)); err != nil {
			return err
		}
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	attrs := []any{"addr", lis.Addr().String(), "tls", srv.TLS(), "mtls", srv.MutualTLS(), "tokens", srv.Tokens()}
	if msrv != nil {
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
	if metricsLis != nil && cfg.TLSClientCA != "" && cfg.Admission.TokensFile == "" && cfg.Exporter.WebConfigFile == "" {
		// Mutual TLS reads as if it closed probed to strangers: it closes
		// the gRPC port only.
		logger.Warn("the metrics listener (/probe, /metrics, the page) is open to whoever reaches it: --tls-client-ca guards gRPC only; give it client certificates or users in --web-config-file, or require --tokens-file", "metrics_addr", metricsLis.Addr().String())
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
	c := cfg.Config
	c.PolicyRules = make([]string, 0, len(cfg.Deny)+len(cfg.Allow))
	for _, r := range cfg.Deny {
		c.PolicyRules = append(c.PolicyRules, "deny "+r)
	}
	for _, r := range cfg.Allow {
		c.PolicyRules = append(c.PolicyRules, "allow "+r)
	}
	c.Self, c.Logger = self, logger
	return c
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
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, srv *server.Server) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			// Each file that fails is logged as it fails.
			_ = srv.Reload()
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
// memoryLimitRatio is the share of its cgroup's memory limit that
// probed's Go heap is held to, leaving the rest to stacks and the runtime.
const memoryLimitRatio = 0.9

// setMemoryLimit holds the Go heap within the memory limit of probed's
// cgroup (a container's, a systemd unit's MemoryMax), unless GOMEMLIMIT
// says otherwise. Without it the collector lets garbage grow to the live
// heap's size again: 512 Fetches in flight, some 150 MB live, took probed
// past a 512 MiB limit, where it was killed.
func setMemoryLimit(logger *slog.Logger) {
	limit, err := memlimit.Set(memlimit.WithRatio(memoryLimitRatio), memlimit.WithProvider(memlimit.FromCgroup))
	switch {
	case err == nil && limit < math.MaxInt64:
		logger.Info("memory limit", "gomemlimit_bytes", limit)
	case errors.Is(err, memlimit.ErrNoCgroup) || errors.Is(err, memlimit.ErrCgroupsNotSupported):
		// Nothing to hold to.
	case err != nil:
		logger.Warn("no memory limit taken from the cgroup", "err", err)
	}
}

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
