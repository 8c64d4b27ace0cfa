// Package server assembles netprobe's gRPC server: the probe service with
// its limits, authentication, target policy, metrics, audit log, health
// and reflection. probed, the CLI's in-process mode and the tests all build
// their server here, so that each of them runs what production runs.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/batchwriter"
	"github.com/netprobe/netprobe/internal/services"
	"github.com/netprobe/netprobe/internal/wire"
	"github.com/netprobe/netprobe/policy"
	"github.com/netprobe/netprobe/service"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxInFlight          = 512
	DefaultMaxInFlightPerCaller = 64
	DefaultRate                 = 50
	DefaultBurst                = 100
	DefaultKeepaliveMinTime     = 10 * time.Second
	// DefaultMaxStreamsPerConnection caps the calls one connection runs at
	// once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
	DefaultMaxStreamsPerConnection = 100
	// DefaultMaxHeaderBytes caps a call's header list (HTTP/2
	// SETTINGS_MAX_HEADER_LIST_SIZE).
	DefaultMaxHeaderBytes = 16 << 10
	// DefaultMaxStreamResets is how many streams a connection may reset or
	// have refused in a burst; a tenth of that comes back each second.
	DefaultMaxStreamResets = 500
	// DefaultMaxReadsPerCaller caps the requests of one caller read at
	// once, for health checks.
	DefaultMaxReadsPerCaller = 8
	// DefaultMaxWatchesPerCaller and DefaultMaxWatches cap the streams
	// that stay open without being probes (health Watch, reflection): one
	// caller's, and all callers'.
	DefaultMaxWatchesPerCaller = 16
	DefaultMaxWatches          = 1024
	// DefaultMaxSweepsPerCaller and DefaultMaxSweeps cap the Sweeps
	// running at once: one caller's, and all callers'. Each holds its
	// request, up to the largest message, while it runs.
	DefaultMaxSweepsPerCaller = 8
	DefaultMaxSweeps          = 128
	// DefaultMaxConnections and DefaultMaxConnectionsPerSource cap the
	// gRPC connections served at once: in all, and from one IPv4 address
	// or IPv6 /64.
	DefaultMaxConnections          = 2048
	DefaultMaxConnectionsPerSource = 256
	// DefaultAuthTimeout is how long a connection may stay open idle
	// without an authenticated call.
	DefaultAuthTimeout = 10 * time.Second
	// handshakeTimeout bounds a new connection's TLS handshake and HTTP/2
	// preface.
	handshakeTimeout = 10 * time.Second
)

// Config is what a server is built from. Zero fields take the defaults
// above, or service's for the probe limits.
type Config struct {
	// TLSCert and TLSKey are the files of the server's certificate and
	// key (PEM); empty serves plaintext. They are read again when they
	// change (checked at most once a second) and on Reload.
	TLSCert, TLSKey string
	// TLSClientCA, when set, requires client certificates signed by these
	// CAs (PEM); the certificate's common name names the caller.
	TLSClientCA string
	// ClientIdentities are client certificates probes may present to their
	// targets, as "NAME=CERT,KEY" (PEM files); the policy grants them to
	// callers. They are read again when they change and on Reload.
	ClientIdentities []string
	// TokensFile, when set, requires a bearer token from it ("NAME TOKEN"
	// lines) on every call but health checks; NAME names the caller.
	TokensFile string

	// PolicyRules are target policy lines ("allow RULE", "deny RULE",
	// "caller NAME allow RULE"), added after PolicyFile's.
	PolicyRules []string
	// PolicyFile is a file of target policy lines.
	PolicyFile string
	// AllowSource lists the addresses, or prefixes, a probe may bind as its
	// source (Target.source_address); none by default.
	AllowSource []string
	// Self lists the addresses the server answers on (its gRPC and metrics
	// listeners), which the target policy denies to every probe.
	Self []net.Addr

	// DefaultTimeout, MaxTimeout, MaxPayloadBytes, MaxFetchBytes,
	// MaxSweepConcurrency and MaxSweepTargets are the service's limits
	// (see service.Config).
	DefaultTimeout      time.Duration
	MaxTimeout          time.Duration
	MaxPayloadBytes     int
	MaxFetchBytes       uint64
	MaxSweepConcurrency int
	MaxSweepTargets     int
	// MaxInFlight caps the probes running at once, server-wide, and
	// MaxInFlightPerCaller those of one caller.
	MaxInFlight          int
	MaxInFlightPerCaller int
	// Rate is how many probes a second a caller may start on average, and
	// Burst how many at once.
	Rate  float64
	Burst int
	// KeepaliveMinTime is the shortest interval a client may ping at.
	KeepaliveMinTime time.Duration
	// MaxStreamsPerConnection caps the calls one connection runs at once.
	MaxStreamsPerConnection int
	// MaxHeaderBytes caps a call's header list.
	MaxHeaderBytes int
	// MaxStreamResets is how many streams a connection may reset, or have
	// refused, in a burst, earning back a tenth of it each second; past
	// it the connection is closed with a GOAWAY.
	MaxStreamResets int
	// MaxReadsPerCaller caps the requests of one caller that are read at
	// once, for health checks.
	MaxReadsPerCaller int
	// MaxWatchesPerCaller caps the streams one caller holds open that are
	// not probes (health Watch, reflection), and MaxWatches those of all
	// callers.
	MaxWatchesPerCaller int
	MaxWatches          int
	// MaxSweepsPerCaller caps the Sweeps one caller runs at once, and
	// MaxSweeps those of all callers.
	MaxSweepsPerCaller int
	MaxSweeps          int
	// MaxConnections caps the gRPC connections served at once, and
	// MaxConnectionsPerSource those from one IPv4 address or IPv6 /64;
	// a connection over either is closed as it is accepted.
	MaxConnections          int
	MaxConnectionsPerSource int
	// AuthTimeout is how long a connection may stay open without an
	// authenticated call (health checks do not count when tokens are
	// required), once no stream of it is running: then it is closed.
	AuthTimeout time.Duration

	// ModulesFile is a module file in blackbox_exporter's format, for
	// /probe; empty serves the default modules. It is read again when it
	// changes (checked at most once a second) and on Reload.
	ModulesFile string
	// WebConfigFile is the metrics listener's exporter-toolkit web
	// configuration, which the listener's server applies; its basic auth
	// users name the scrapers of /probe.
	WebConfigFile string
	// ScrapeTimeoutOffset is taken off a scrape's timeout for its probe's.
	ScrapeTimeoutOffset time.Duration
	// ScrapeRate and ScrapeBurst are each scraper's bucket of /probe
	// probes, apart from its gRPC one.
	ScrapeRate  float64
	ScrapeBurst int
	// MetricsMaxConns caps the metrics listener's open connections,
	// and MetricsMaxSourceConns those of one source address (an
	// IPv4 address or IPv6 /64); MetricsIdleTimeout closes a keep-alive
	// connection idle that long (see MetricsServer).
	MetricsMaxConns       int
	MetricsMaxSourceConns int
	MetricsIdleTimeout    time.Duration
	// PublicStatus serves /metrics, the page and its reports to anyone;
	// without it they need what /probe needs (a bearer token when there
	// are tokens).
	PublicStatus bool

	// DNSServer, "host:port", receives every DNS query instead of
	// /etc/resolv.conf's servers.
	DNSServer string
	// ServicesFile is the services database; empty uses the built-in
	// table alone.
	ServicesFile string

	// Logger receives the audit lines and the server's own log; nil
	// discards them.
	Logger *slog.Logger
	// LogStats, when set, reports what Logger's writer has done, for the
	// metrics (probed batches its log).
	LogStats func() batchwriter.Stats
}

func (c *Config) setDefaults() {
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MaxInFlightPerCaller == 0 {
		c.MaxInFlightPerCaller = DefaultMaxInFlightPerCaller
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.Burst == 0 {
		c.Burst = DefaultBurst
	}
	if c.KeepaliveMinTime == 0 {
		c.KeepaliveMinTime = DefaultKeepaliveMinTime
	}
	if c.MaxStreamsPerConnection == 0 {
		c.MaxStreamsPerConnection = DefaultMaxStreamsPerConnection
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxStreamResets == 0 {
		c.MaxStreamResets = DefaultMaxStreamResets
	}
	if c.MaxReadsPerCaller == 0 {
		c.MaxReadsPerCaller = DefaultMaxReadsPerCaller
	}
	if c.MaxWatchesPerCaller == 0 {
		c.MaxWatchesPerCaller = DefaultMaxWatchesPerCaller
	}
	if c.MaxWatches == 0 {
		c.MaxWatches = DefaultMaxWatches
	}
	if c.MaxSweepsPerCaller == 0 {
		c.MaxSweepsPerCaller = DefaultMaxSweepsPerCaller
	}
	if c.MaxSweeps == 0 {
		c.MaxSweeps = DefaultMaxSweeps
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnectionsPerSource == 0 {
		c.MaxConnectionsPerSource = DefaultMaxConnectionsPerSource
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = DefaultAuthTimeout
	}
	if c.MaxPayloadBytes == 0 {
		c.MaxPayloadBytes = service.DefaultMaxPayloadBytes
	}
	if c.MaxTimeout == 0 {
		c.MaxTimeout = service.DefaultMaxTimeout
	}
	if c.ScrapeTimeoutOffset == 0 {
		c.ScrapeTimeoutOffset = DefaultScrapeTimeoutOffset
	}
	if c.ScrapeRate == 0 {
		c.ScrapeRate = DefaultScrapeRate
	}
	if c.ScrapeBurst == 0 {
		c.ScrapeBurst = DefaultScrapeBurst
	}
	if c.MetricsMaxConns == 0 {
		c.MetricsMaxConns = DefaultMetricsMaxConns
	}
	if c.MetricsMaxSourceConns == 0 {
		c.MetricsMaxSourceConns = DefaultMetricsMaxSourceConns
	}
	if c.MetricsIdleTimeout == 0 {
		c.MetricsIdleTimeout = DefaultMetricsIdleTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Server is a gRPC server serving netprobe.v1.ProbeService, health and
// reflection.
type Server struct {
	cfg      Config
	grpc     *grpc.Server
	health   *drainingHealth
	registry *prometheus.Registry
	inflight *inFlight
	rates    *rateLimiter
	conns    *connLimiter
	service  *service.Server
	metrics  *metrics
	cert     *certificate
	// identities are the client certificates probes may present.
	identities identities
	tokens     *tokens
	policy     *policy.Policy
	// sources are the addresses probes may bind.
	sources []netip.Prefix
	scraper *scraper
	// recent are the last probes, for the page.
	recent *recentProbes
	// refusalLog limits the log lines of calls refused as they open;
	// refusalsUnlogged counts those left out since the last.
	refusalLog       *rate.Limiter
	refusalsUnlogged atomic.Uint64
	logger           *slog.Logger
}

// New builds a server from cfg; Serve then serves it.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	s := &Server{cfg: cfg, logger: cfg.Logger}
	table, err := services.Load(cfg.ServicesFile)
	if err != nil {
		return nil, err
	}
	if cfg.TokensFile != "" {
		if s.tokens, err = loadTokens(cfg.TokensFile); err != nil {
			return nil, err
		}
	}
	creds := insecure.NewCredentials()
	switch {
	case cfg.TLSCert != "" || cfg.TLSKey != "":
		if s.cert, err = loadCertificate(cfg.TLSCert, cfg.TLSKey, s.logger); err != nil {
			return nil, err
		}
		if creds, err = serverTLS(s.cert, cfg.TLSClientCA); err != nil {
			return nil, err
		}
	case cfg.TLSClientCA != "":
		return nil, errors.New("a client CA needs a server certificate and key")
	}
	if s.policy, err = targetPolicy(cfg); err != nil {
		return nil, err
	}

	s.recent = newRecentProbes(recentProbesKept)
	s.refusalLog = rate.NewLimiter(refusalLogRate, refusalLogBurst)
	s.registry = prometheus.NewRegistry()
	s.metrics = newMetrics(s.registry)
	m := s.metrics
	// Every refusal the policy can make starts at zero.
	for _, rule := range s.policy.Refusals() {
		m.policyRefusals.WithLabelValues(rule)
	}
	if cfg.LogStats != nil {
		registerLogStats(s.registry, cfg.LogStats)
	}
	grpcMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	s.registry.MustRegister(grpcMetrics)
	s.inflight = newInFlight(cfg.MaxInFlight, cfg.MaxInFlightPerCaller, m)
	s.rates = newRateLimiter("rate", cfg.Rate, cfg.Burst, m)
	s.conns = newConnLimiter(cfg.MaxConnections, cfg.MaxConnectionsPerSource, m.connections, func(reason string) {
		m.transportRefusals.WithLabelValues(reason).Inc()
	})
	if s.sources, err = parseSources(cfg.AllowSource); err != nil {
		return nil, err
	}
	if s.identities, err = loadIdentities(cfg.ClientIdentities, s.logger); err != nil {
		return nil, err
	}
	if s.scraper, err = newScraper(s, cfg); err != nil {
		return nil, err
	}
	srv, err := service.New(service.Config{
		AllowedSources:      s.sources,
		ClientIdentities:    moduleIdentities{ids: s.identities, sc: s.scraper},
		DefaultTimeout:      cfg.DefaultTimeout,
		MaxTimeout:          cfg.MaxTimeout,
		MaxPayloadBytes:     cfg.MaxPayloadBytes,
		MaxFetchBytes:       cfg.MaxFetchBytes,
		MaxSweepConcurrency: cfg.MaxSweepConcurrency,
		MaxSweepTargets:     cfg.MaxSweepTargets,
		DNSServer:           cfg.DNSServer,
		Services:            table,
		Policy:              s.policy,
		Limiter:             probeLimits{rates: s.rates, inflight: s.inflight},
		Observe:             observe(s.logger, m, s.recent),
	})
	if err != nil {
		return nil, err
	}
	s.service = srv

	g := s.guard()
	s.grpc = grpc.NewServer(s.serverOptions(g, creds, grpcMetrics)...)
	s.grpc.RegisterService(g.wrap(&netprobev1.ProbeService_ServiceDesc), srv)
	s.health = &drainingHealth{Server: health.NewServer()}
	s.grpc.RegisterService(g.wrap(&healthpb.Health_ServiceDesc), s.health)
	reflection.Register(s.grpc)
	grpcMetrics.InitializeMetrics(s.grpc)
	s.health.SetServingStatus(netprobev1.ProbeService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s, nil
}

// parseSources parses --allow-source values: addresses or prefixes.
func parseSources(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("allow source %q: want an IP address or a prefix", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// streamWorkers is the size of the gRPC server's handler pool; calls
// beyond it get a goroutine of their own.
const streamWorkers = 128

func (s *Server) guard() *guard {
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		// A successful probe has its own audit line; the call's is debug.
		logging.WithLevels(func(code codes.Code) logging.Level {
			if code == codes.OK {
				return logging.LevelDebug
			}
			return logging.DefaultServerCodeToLevel(code)
		}),
	}
	return &guard{
		logUnary:  logging.UnaryServerInterceptor(interceptorLogger(s.logger), logOpts...),
		logStream: logging.StreamServerInterceptor(interceptorLogger(s.logger), logOpts...),
		rates:     s.rates,
		inflight:  s.inflight,
		reads:     newGate("requests being read", "reads_per_caller", s.cfg.MaxReadsPerCaller, "", 0, s.metrics),
		watches:   newGate("streams open (health Watch, reflection)", "watches_per_caller", s.cfg.MaxWatchesPerCaller, "watches", s.cfg.MaxWatches, s.metrics),
		sweeps:    newGate("Sweeps running", "sweeps_per_caller", s.cfg.MaxSweepsPerCaller, "sweeps", s.cfg.MaxSweeps, s.metrics),
		logger:    s.logger,
	}
}

// serverOptions puts authentication in the tap handle (see tap), the
// transport's limits in place, and chains two interceptors, outermost
// first: the gRPC metrics, then the guard.
func (s *Server) serverOptions(g *guard, creds credentials.TransportCredentials, grpcMetrics *grpcprom.ServerMetrics) []grpc.ServerOption {
	resets := float64(s.cfg.MaxStreamResets)
	opts := []grpc.ServerOption{
		grpc.Creds(&guardedCreds{TransportCredentials: creds, burst: resets, refill: resets / 10,
			authTimeout: s.cfg.AuthTimeout,
			cut:         func(reason string) { s.metrics.transportRefusals.WithLabelValues(reason).Inc() }}),
		grpc.InTapHandle(s.tap),
		grpc.ChainUnaryInterceptor(grpcMetrics.UnaryServerInterceptor(), g.unary),
		grpc.ChainStreamInterceptor(grpcMetrics.StreamServerInterceptor(), g.stream),
		// Room for the largest payload plus the rest of the request: the
		// largest request gRPC will read, and only for an admitted call
		// (see guard).
		grpc.MaxRecvMsgSize(s.cfg.MaxPayloadBytes + 64<<10),
		grpc.MaxConcurrentStreams(uint32(s.cfg.MaxStreamsPerConnection)),
		grpc.MaxHeaderListSize(uint32(s.cfg.MaxHeaderBytes)),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: s.cfg.KeepaliveMinTime, PermitWithoutStream: true}),
		// Handlers run on a pool of goroutines whose stacks have already
		// grown, instead of a new goroutine per call growing its own
		// (bench: server CPU per Connect 175 -> 153 µs).
		grpc.NumStreamWorkers(streamWorkers),
	}
	return append(opts, wire.ServerOptions()...)
}

// Serve serves gRPC on lis until the server stops, within the connection
// limits.
func (s *Server) Serve(lis net.Listener) error {
	err := s.grpc.Serve(s.conns.listener(lis))
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// TLS reports whether the server serves TLS, and MutualTLS whether it
// requires client certificates.
func (s *Server) TLS() bool       { return s.cert != nil }
func (s *Server) MutualTLS() bool { return s.cfg.TLSClientCA != "" }

// Tokens reports whether callers need a bearer token.
func (s *Server) Tokens() bool { return s.tokens != nil }

// PolicyRules lists the target policy's rules, in the order they are
// judged.
func (s *Server) PolicyRules() []string { return s.policy.Rules() }

// Reload reads the certificate files again, the server's and the client
// identities'; on failure the certificate in use stays.
func (s *Server) Reload() error {
	if s.cert == nil && len(s.identities) == 0 && s.cfg.ModulesFile == "" {
		s.logger.Info("nothing to reload", "why", "no certificates, no module file")
		return nil
	}
	var errs []error
	if err := s.scraper.reload(); err != nil {
		errs = append(errs, err)
	}
	if s.cert != nil {
		if err := s.cert.reload(); err != nil {
			errs = append(errs, err)
		} else {
			s.logger.Info("reloaded the TLS certificate", "file", s.cert.certFile)
		}
	}
	for name, c := range s.identities {
		if err := c.reload(); err != nil {
			errs = append(errs, fmt.Errorf("client identity %s: %w", name, err))
		} else {
			s.logger.Info("reloaded a client identity", "identity", name, "file", c.certFile)
		}
	}
	return errors.Join(errs...)
}

// Drain shuts the server down: new probes are refused from now on, and
// Sweeps start no new probe; health turns NOT_SERVING (telling load
// balancers); the calls in progress get grace to finish. A little before
// the grace ends, the Fetches and Sweeps left are cut short, so that they
// still send what they have (a Fetch its summary, a Sweep its abandoned
// targets) before their streams end; then the calls still left are
// cancelled. It returns once the server has stopped.
func (s *Server) Drain(grace time.Duration) {
	s.logger.Info("draining", "grace", grace)
	s.inflight.drain()
	s.service.Drain()
	s.health.drain()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	margin := cutMargin(grace)
	cut := time.NewTimer(grace - margin)
	defer cut.Stop()
	select {
	case <-stopped:
		s.logger.Info("stopped")
		return
	case <-cut.C:
	}
	s.logger.Warn("grace period ending: cutting Fetches and Sweeps short")
	s.service.Cut()
	end := time.NewTimer(margin)
	defer end.Stop()
	select {
	case <-stopped:
	case <-end.C:
		// Stop cancels the calls left, and each probe closes its target
		// connection as its call's context ends.
		s.logger.Warn("grace period over: closing remaining calls")
		s.grpc.Stop()
		<-stopped
	}
	s.logger.Info("stopped")
}

// cutMargin is how long before the grace period ends the running Fetches
// and Sweeps are cut, to send what they have: a quarter of the grace, at
// most 2 s.
func cutMargin(grace time.Duration) time.Duration {
	return min(grace/4, 2*time.Second)
}

// Stop stops the server at once, cancelling every call.
func (s *Server) Stop() { s.grpc.Stop() }

// MetricsHandler serves the Prometheus metrics at /metrics, the probe
// service's health at /healthz, blackbox_exporter's /probe, and a page at
// / with the recent probes (their reports at /probes/ID). All but
// /healthz need the credentials /probe needs, unless
// Config.PublicStatus; MetricsServer serves it on a listener.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.scraper.guard(promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry})))
	mux.Handle("/healthz", healthHandler(s.health))
	mux.Handle("/probe", s.scraper)
	mux.Handle("GET /{$}", s.scraper.guard(http.HandlerFunc(s.page)))
	mux.Handle("GET /probes/{id}", s.scraper.guard(http.HandlerFunc(s.report)))
	// No answer of the listener is to be read as another type than it
	// says: a report repeats what targets sent.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, r)
	})
}

// interceptorLogger adapts slog to go-grpc-middleware's logging interface.
func interceptorLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// healthHandler mirrors the gRPC health of the probe service for checkers
// that speak only HTTP, or that cannot reach a TLS gRPC port (the
// kubelet's gRPC probes are plaintext): 200 when SERVING, 503 else. It
// needs no credentials, as gRPC health checks need no token.
func healthHandler(hs *drainingHealth) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := hs.Check(r.Context(), &healthpb.HealthCheckRequest{Service: netprobev1.ProbeService_ServiceDesc.ServiceName})
		st := resp.GetStatus()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err != nil || st != healthpb.HealthCheckResponse_SERVING {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, st)
	})
}
