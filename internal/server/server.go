// Package server assembles probed: its gRPC server (the probe service with
// the guard that admits its calls, authentication, the target policy,
// health, reflection, TLS and the drain), and beside it, from the same
// parts, the metrics listener (see exporter). probed, the CLI's
// in-process mode and the tests all build their server here, so that each
// of them runs what production runs.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"
	"unicode/utf8"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/prometheus/client_golang/prometheus"
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
	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/audit"
	"github.com/netprobe/netprobe/internal/batchwriter"
	"github.com/netprobe/netprobe/internal/buildinfo"
	"github.com/netprobe/netprobe/internal/connguard"
	"github.com/netprobe/netprobe/internal/exporter"
	"github.com/netprobe/netprobe/internal/fleet"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/internal/reload"
	"github.com/netprobe/netprobe/internal/services"
	"github.com/netprobe/netprobe/internal/settings"
	"github.com/netprobe/netprobe/internal/statuspage"
	"github.com/netprobe/netprobe/internal/wire"
	"github.com/netprobe/netprobe/policy"
	"github.com/netprobe/netprobe/service"
)

// handshakeTimeout bounds a new connection's TLS handshake and HTTP/2
// preface.
const handshakeTimeout = 10 * time.Second

// Config is what a server is built from. Each setting is declared once,
// here, by its field's tags (see internal/settings): probed's flag, its
// environment twin, its default (which New gives a field left zero) and
// its help. The fields without a flag are given in code.
type Config struct {
	// TLSCert and TLSKey are the files of the server's certificate and
	// key (PEM); empty serves plaintext. They are read again when they
	// change (checked at most once a second) and on Reload.
	TLSCert string `flag:"tls-cert" env:"NETPROBE_TLS_CERT" group:"Serving" help:"Serve TLS with this certificate (PEM)."`
	TLSKey  string `flag:"tls-key" env:"NETPROBE_TLS_KEY" group:"Serving" help:"The private key (PEM) of --tls-cert."`
	// TLSClientCA, when set, requires client certificates signed by these
	// CAs (PEM); the certificate's common name names the caller.
	TLSClientCA string `flag:"tls-client-ca" env:"NETPROBE_TLS_CLIENT_CA" group:"Serving" help:"Require client certificates signed by these CAs (PEM): mutual TLS. The certificate's common name is the caller's identity."`

	// PolicyFile is a file of target policy lines.
	PolicyFile string `flag:"policy-file" env:"NETPROBE_POLICY_FILE" group:"Target policy" help:"Read rules from this file: \"allow RULE\", \"deny RULE\", \"caller NAME allow RULE\", and the client identities callers may present: \"identity ID\" (anyone), \"caller NAME identity ID\"."`
	// PolicyRules are target policy lines ("allow RULE", "deny RULE",
	// "caller NAME allow RULE"), added after PolicyFile's.
	PolicyRules []string
	// AllowSource lists the addresses, or prefixes, a probe may bind as its
	// source (Target.source_address); none by default.
	AllowSource []string `flag:"allow-source" env:"NETPROBE_ALLOW_SOURCE" sep:";" group:"Target policy" help:"Let probes bind this source address, or any of this prefix (repeatable; ; between them in the environment): Target.source_address. None by default: a request that asks for one is INVALID_ARGUMENT."`
	// Self lists the addresses the server answers on (its gRPC and metrics
	// listeners), which the target policy denies to every probe.
	Self []net.Addr

	// ClientIdentities are client certificates probes may present to their
	// targets, as "NAME=CERT,KEY" (PEM files); the policy grants them to
	// callers. They are read again when they change and on Reload.
	ClientIdentities []string `flag:"client-identity" env:"NETPROBE_CLIENT_IDENTITY" sep:";" group:"Probing" help:"A client certificate and key (PEM files), NAME=CERT,KEY, that probes may present to their targets as NAME (TlsOptions.client_identity), to callers the policy grants it (\"identity NAME\", \"caller CALLER identity NAME\"); repeatable, reloaded like --tls-cert."`
	// DNSServer, "host:port", receives every DNS query instead of
	// /etc/resolv.conf's servers.
	DNSServer string `flag:"dns-server" env:"NETPROBE_DNS_SERVER" group:"Probing" help:"Send every DNS query to this HOST:PORT instead of the servers of /etc/resolv.conf (the hosts file is still read first)."`
	// ServicesFile is the services database; empty uses the built-in
	// table alone.
	ServicesFile string `flag:"services-file" env:"NETPROBE_SERVICES_FILE" default:"/etc/services" group:"Probing" help:"Services database for service names; when it is missing or lacks a name, a built-in table answers."`

	// Limits are the probe service's.
	service.Limits
	// MaxConnections caps the gRPC connections served at once, and
	// MaxConnectionsPerSource those from one IPv4 address or IPv6 /64;
	// a connection over either is closed as it is accepted.
	MaxConnections          int `flag:"max-connections" env:"NETPROBE_MAX_CONNECTIONS" default:"2048" group:"Limits" help:"Most gRPC connections served at once; one more is reset as it is accepted, before any of it is read."`
	MaxConnectionsPerSource int `flag:"max-connections-per-source" env:"NETPROBE_MAX_CONNECTIONS_PER_SOURCE" default:"256" group:"Limits" help:"Most gRPC connections served at once from one IPv4 address or IPv6 /64; one more is reset as it is accepted."`
	// AuthTimeout is how long a connection may stay open without an
	// authenticated call (health checks do not count when tokens are
	// required), once no stream of it is running: then it is closed.
	AuthTimeout time.Duration `flag:"auth-timeout" env:"NETPROBE_AUTH_TIMEOUT" default:"10s" group:"Limits" help:"How long a gRPC connection may stay open, with no stream running, without an authenticated call (with --tokens-file, health checks do not authenticate; without it, any call does); then it gets a GOAWAY and is closed. Until then it may send 16 KiB of request data, and 1 KiB a second more."`
	// MaxStreamsPerConnection caps the calls one connection runs at once.
	MaxStreamsPerConnection int `flag:"max-streams-per-connection" env:"NETPROBE_MAX_STREAMS_PER_CONNECTION" default:"100" group:"Limits" help:"Most calls one client connection runs at once (HTTP/2 MAX_CONCURRENT_STREAMS); more are refused (REFUSED_STREAM), and gRPC clients wait instead."`
	// MaxHeaderBytes caps a call's header list.
	MaxHeaderBytes int `flag:"max-header-bytes" env:"NETPROBE_MAX_HEADER_BYTES" default:"16384" group:"Limits" help:"Largest header list a call may send, in bytes (HTTP/2 MAX_HEADER_LIST_SIZE); a larger one resets the stream, its headers not decoded."`
	// MaxStreamResets is how many streams a connection may reset, or have
	// refused, in a burst, earning back a tenth of it each second; past
	// it the connection is closed with a GOAWAY.
	MaxStreamResets int `flag:"max-stream-resets" env:"NETPROBE_MAX_STREAM_RESETS" default:"500" group:"Limits" help:"Streams a connection may cancel, or have refused, in a burst; a tenth of that comes back each second. Past it the connection gets a GOAWAY (ENHANCE_YOUR_CALM) and is closed: the HTTP/2 rapid reset attack."`
	// KeepaliveMinTime is the shortest interval a client may ping at.
	KeepaliveMinTime time.Duration `flag:"keepalive-min-time" env:"NETPROBE_KEEPALIVE_MIN_TIME" default:"10s" group:"Limits" help:"Shortest interval between client keepalive pings; a client pinging more often gets a GOAWAY (too_many_pings)."`

	// Exporter is the metrics listener's (/probe, /metrics, the page).
	Exporter exporter.Config
	// Fleet is this node's part in a fleet: its name and labels, its
	// peers, the fan-out.
	Fleet fleet.Config
	// Admission is who may call, and how much.
	Admission admission.Config

	// Logger receives the audit lines and the server's own log; nil
	// discards them.
	Logger *slog.Logger
	// LogStats, when set, reports what Logger's writer has done, for the
	// metrics (probed batches its log).
	LogStats func() batchwriter.Stats
}

// Server is a gRPC server serving netprobe.v1.ProbeService, health and
// reflection.
type Server struct {
	cfg      Config
	grpc     *grpc.Server
	health   *drainingHealth
	registry *prometheus.Registry
	// admission names callers and charges their limits; conns holds the
	// gRPC listener's connections to theirs.
	admission *admission.Admission
	conns     *admission.ConnLimiter
	service   *service.Server
	metrics   *metrics
	// fleet is this node and its peers.
	fleet *fleet.Fleet
	// audit records the probes; modules are /probe's.
	audit   *audit.Recorder
	modules *modules.Store
	cert    *certificate
	// files are the files the server reads, kept current.
	files *reload.Files
	// identities are the client certificates probes may present.
	identities identities
	// policy is the target policy in use, swapped whole as its file
	// changes.
	policy atomic.Pointer[policy.Policy]
	// sources are the addresses probes may bind.
	sources []netip.Prefix
	// refusalLog limits the log lines of calls refused as they open;
	// refusalsUnlogged counts those left out since the last.
	refusalLog       *rate.Limiter
	refusalsUnlogged atomic.Uint64
	logger           *slog.Logger
}

// New builds a server from cfg; Serve then serves it.
func New(cfg Config) (*Server, error) {
	if err := settings.Defaults(&cfg); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, logger: cfg.Logger}
	table, err := services.Load(cfg.ServicesFile)
	if err != nil {
		return nil, err
	}
	s.refusalLog = rate.NewLimiter(refusalLogRate, refusalLogBurst)
	s.registry = prometheus.NewRegistry()
	s.metrics = newMetrics(s.registry)
	m := s.metrics
	// Every file probed reads is loaded, and kept current, one way.
	s.files = reload.New(s.registry, s.logger)
	creds := insecure.NewCredentials()
	switch {
	case cfg.TLSCert != "" || cfg.TLSKey != "":
		s.cert = &certificate{certFile: cfg.TLSCert, keyFile: cfg.TLSKey}
		if err := s.files.Add(s.cert.file("tls-cert")); err != nil {
			return nil, err
		}
		if creds, err = serverTLS(s.cert, cfg.TLSClientCA); err != nil {
			return nil, err
		}
	case cfg.TLSClientCA != "":
		return nil, errors.New("a client CA needs a server certificate and key")
	}
	if cfg.PolicyFile != "" {
		err = s.files.Add(reload.File{Name: "policy-file", Paths: []string{cfg.PolicyFile}, Load: s.reloadPolicy})
	} else {
		err = s.reloadPolicy()
	}
	if err != nil {
		return nil, err
	}
	s.audit = audit.New(s.logger, s.registry, s.policy.Load().Refusals())
	if cfg.LogStats != nil {
		registerLogStats(s.registry, cfg.LogStats)
	}
	grpcMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	s.registry.MustRegister(grpcMetrics)
	s.admission, err = admission.New(cfg.Admission, admission.Metrics{Refusals: m.limitRefusals, Unauthenticated: m.transportRefusals.WithLabelValues("unauthenticated"), InFlight: m.inFlight})
	if err != nil {
		return nil, err
	}
	if cfg.Admission.TokensFile != "" {
		s.files.Keep(reload.File{Name: "tokens-file", Paths: []string{cfg.Admission.TokensFile}, Load: s.admission.ReloadTokens})
	}
	s.conns = admission.NewConnLimiter(cfg.MaxConnections, cfg.MaxConnectionsPerSource, m.connections, func(reason string) {
		m.transportRefusals.WithLabelValues(reason).Inc()
	})
	if s.sources, err = policy.ParseSources(cfg.AllowSource); err != nil {
		return nil, err
	}
	if s.identities, err = parseIdentities(cfg.ClientIdentities); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(s.identities)) {
		if err := s.files.Add(s.identities[name].file("client-identity " + name)); err != nil {
			return nil, err
		}
	}
	check, err := exporter.ModuleCheck(cfg.Exporter, cfg.Limits, s.sources)
	if err != nil {
		return nil, err
	}
	if s.modules, err = modules.Open(cfg.Exporter.ModulesFile, check, s.logger); err != nil {
		// Named as probed's files name their errors (internal/reload).
		return nil, fmt.Errorf("modules-file: %w", err)
	}
	if f := s.modules.File(); f != "" {
		s.files.Keep(reload.File{Name: "modules-file", Paths: []string{f}, Load: s.modules.Reload})
	}
	s.warnEcho()
	srv, err := service.New(service.Config{
		AllowedSources:   s.sources,
		ClientIdentities: clientIdentities{ids: s.identities, modules: s.modules},
		Limits:           cfg.Limits,
		DNSServer:        cfg.DNSServer,
		Services:         table,
		Policy:           livePolicy{&s.policy},
		Limiter:          s.admission,
		Observe:          s.audit.Observe,
	})
	if err != nil {
		return nil, err
	}
	s.service = srv
	if s.fleet, err = fleet.New(cfg.Fleet, service.ResolverFor(cfg.DNSServer), s.registry, s.logger); err != nil {
		return nil, err
	}

	g := s.guard()
	s.grpc = grpc.NewServer(s.serverOptions(g, creds, grpcMetrics)...)
	s.grpc.RegisterService(g.wrap(&netprobev1.ProbeService_ServiceDesc), fleet.NewService(srv, s.fleet))
	s.health = &drainingHealth{Server: health.NewServer()}
	s.grpc.RegisterService(g.wrap(&healthpb.Health_ServiceDesc), s.health)
	reflection.Register(s.grpc)
	grpcMetrics.InitializeMetrics(s.grpc)
	s.health.SetServingStatus(netprobev1.ProbeService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s, nil
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
		admission: s.admission,
		logger:    s.logger,
	}
}

// serverOptions puts authentication in the tap handle (see tap), the
// transport's limits in place, and chains two interceptors, outermost
// first: the gRPC metrics, then the guard.
func (s *Server) serverOptions(g *guard, creds credentials.TransportCredentials, grpcMetrics *grpcprom.ServerMetrics) []grpc.ServerOption {
	resets := float64(s.cfg.MaxStreamResets)
	opts := []grpc.ServerOption{
		grpc.Creds(connguard.Creds(creds, connguard.Options{Burst: resets, Refill: resets / 10,
			AuthTimeout: s.cfg.AuthTimeout,
			// Without tokens or client certificates, any call makes a
			// connection known: only a running call may keep its place.
			EvictIdle: !s.admission.Tokens() && s.cfg.TLSClientCA == "",
			Cut:       func(reason string) { s.metrics.transportRefusals.WithLabelValues(reason).Inc() }})),
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

// warnEcho says, as probed starts, when the module file has icmp modules
// and this process can send no echo: each of their scrapes would fail at
// STAGE_SOCKET, and the operator would learn it from the first alert.
func (s *Server) warnEcho() {
	set := s.modules.Set()
	var icmp []string
	for _, name := range set.Names() {
		if set.Modules[name].Prober == "icmp" {
			icmp = append(icmp, name)
		}
	}
	if len(icmp) == 0 {
		return
	}
	if err := service.CheckEcho(); err != nil {
		s.logger.Warn("icmp modules cannot run here: their scrapes will fail at STAGE_SOCKET", "modules", icmp, "why", err)
	}
}

// Serve serves gRPC on lis until the server stops, within the connection
// limits, and keeps the files it reads current meanwhile.
func (s *Server) Serve(lis net.Listener) error {
	// The server's own life, not a request's: the watch ends with it.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go s.files.Watch(ctx)
	go s.fleet.Run(ctx)
	err := s.grpc.Serve(s.conns.Listener(lis))
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
func (s *Server) Tokens() bool { return s.admission.Tokens() }

// PolicyRules lists the target policy's rules, in the order they are
// judged.
func (s *Server) PolicyRules() []string { return s.policy.Load().Rules() }

// reloadPolicy builds the target policy again, from the policy file and
// the rules, and puts it in use whole; on failure the policy in use
// stays.
func (s *Server) reloadPolicy() error {
	p, err := targetPolicy(s.cfg)
	if err != nil {
		return err
	}
	s.policy.Store(p)
	return nil
}

// livePolicy is the target policy in use, whichever it is when asked: the
// service's Policy.
type livePolicy struct {
	p *atomic.Pointer[policy.Policy]
}

func (l livePolicy) Check(caller string, ap netip.AddrPort) error {
	return l.p.Load().Check(caller, ap)
}

func (l livePolicy) MayUse(caller, id string) bool { return l.p.Load().MayUse(caller, id) }

// Reload loads every file probed reads again (SIGHUP, POST /-/reload),
// and returns why those that failed did; what they held stays in use.
func (s *Server) Reload() error {
	if len(s.files.States()) == 0 {
		s.logger.Info("nothing to reload", "why", "no file given")
		return nil
	}
	return s.files.Reload()
}

// Files are where the files probed reads stand.
func (s *Server) Files() []reload.State { return s.files.States() }

// Drain shuts the server down: new probes are refused from now on, and
// Sweeps start no new probe; health turns NOT_SERVING (telling load
// balancers); the calls in progress get grace to finish. A little before
// the grace ends, the Fetches and Sweeps left are cut short, so that they
// still send what they have (a Fetch its summary, a Sweep its abandoned
// targets) before their streams end; then the calls still left are
// cancelled. It returns once the server has stopped.
func (s *Server) Drain(grace time.Duration) {
	s.logger.Info("draining", "grace", grace)
	s.admission.Drain()
	s.service.Drain()
	s.health.drain()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	margin := service.CutMargin(grace)
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

// Stop stops the server at once, cancelling every call.
func (s *Server) Stop() { s.grpc.Stop() }

// NewMetricsServer builds the metrics listener's server from the same
// parts as the gRPC server's: its admission, probe service, metrics,
// health, audit and files; its web configuration joins the files. ctx is
// the parent of its requests' contexts.
func (s *Server) NewMetricsServer(ctx context.Context) (*exporter.Server, error) {
	page := statuspage.New(s.audit, s.status, s.logger)
	m := exporter.New(ctx, s.cfg.Exporter, exporter.Deps{
		Admission: s.admission, Prober: s.service, Fleet: fleet.NewService(s.service, s.fleet), Modules: s.modules, Limits: s.service.Limits(),
		Gatherer: s.registry, Health: s.healthOf, Page: page, Reload: s.Reload, Observe: s.audit.Observe,
		Connections: s.metrics.metricsConnections,
		Refused:     func(limit string) { s.metrics.limitRefusals.WithLabelValues(limit).Inc() },
		Logger:      s.logger,
	})
	if f, ok := m.WebConfigFile(); ok {
		if err := s.files.Add(f); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// healthOf is the probe service's health, as gRPC health reports it.
func (s *Server) healthOf(ctx context.Context) healthpb.HealthCheckResponse_ServingStatus {
	resp, err := s.health.Check(ctx, &healthpb.HealthCheckRequest{Service: netprobev1.ProbeService_ServiceDesc.ServiceName})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return resp.GetStatus()
}

// status is what the page shows of the server.
func (s *Server) status() statuspage.Status {
	st := statuspage.Status{
		Version: buildinfo.Version(), Health: s.healthOf(context.Background()).String(),
		TLS: s.TLS(), MutualTLS: s.MutualTLS(), Tokens: s.Tokens(), Policy: s.PolicyRules(),
		Modules: s.modules.Set(), ModulesFile: s.modules.File(),
	}
	for _, a := range s.cfg.Self {
		st.Listeners = append(st.Listeners, a.Network()+" "+a.String())
	}
	for _, f := range s.files.States() {
		st.Files = append(st.Files, statuspage.FileState{Name: f.Name, Path: f.Path, Loaded: f.Loaded, OK: f.OK, Err: f.Err})
	}
	st.Node, st.Labels, st.Peers = s.fleet.PageState()
	for _, setting := range settings.Of(&s.cfg) {
		if setting.Group == "Limits" {
			st.Limits = append(st.Limits, "--"+setting.Name+" "+setting.Value())
		}
	}
	return st
}

// interceptorLogger adapts slog to go-grpc-middleware's logging interface,
// cutting the error a call ended with to maxLoggedError.
func interceptorLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		for i := 0; i+1 < len(fields); i += 2 {
			if k, _ := fields[i].(string); k == "grpc.error" {
				if s, ok := fields[i+1].(string); ok {
					fields[i+1] = loggedError(s)
				}
			}
		}
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// maxLoggedError caps the error text of a log line: an error can repeat
// what a caller sent, and an INVALID_ARGUMENT answer of 29 MB was once
// logged whole, on every call.
const maxLoggedError = 4 << 10

// loggedError is s cut to maxLoggedError bytes, saying how long it was.
func loggedError(s string) string {
	if len(s) <= maxLoggedError {
		return s
	}
	cut := maxLoggedError
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("... (%d bytes)", len(s))
}

// CheckModules loads a module file as a server with cfg would, returning
// its warnings.
func CheckModules(path string, cfg Config) (*modules.Set, []string, error) {
	if err := settings.Defaults(&cfg); err != nil {
		return nil, nil, err
	}
	sources, err := policy.ParseSources(cfg.AllowSource)
	if err != nil {
		return nil, nil, err
	}
	check, err := exporter.ModuleCheck(cfg.Exporter, cfg.Limits, sources)
	if err != nil {
		return nil, nil, err
	}
	return modules.LoadChecked(path, check)
}
