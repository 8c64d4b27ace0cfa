// Package exporter serves probed's HTTP listener (--metrics-addr):
// blackbox_exporter's /probe, which runs a module of the module file
// against a target and answers its result as Prometheus metrics, and beside
// it /metrics, /healthz and the status page, behind exporter-toolkit's
// web configuration. Every request names its caller, and every scrape is
// charged, through admission, as gRPC calls are; the listener is held to
// timeouts and connection caps of its own, and drains with the gRPC
// server.
package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/internal/statuspage"
	"github.com/netprobe/netprobe/service"
)

// Defaults and bounds of the metrics listener.
const (
	// metricsReadHeaderTimeout bounds a request's headers, and a TLS
	// handshake before them.
	metricsReadHeaderTimeout = 10 * time.Second
	// metricsMaxHeaderBytes bounds a request's headers.
	metricsMaxHeaderBytes = 64 << 10
	// scrapeSlack is how much longer than the longest probe (MaxTimeout) a
	// request may take to read and to answer: the probe's own second of
	// grace, and the answer's writing.
	scrapeSlack = 10 * time.Second
	// stopWait is how long the answers still under way when the metrics
	// server stops (health checks) get.
	stopWait = time.Second
)

// Config is the metrics listener's settings. Each is declared once, by
// its field's tags (see internal/settings).
type Config struct {
	// WebConfigFile is the listener's exporter-toolkit web configuration,
	// which its server applies; its basic auth users name the scrapers.
	WebConfigFile string `flag:"web-config-file" env:"NETPROBE_WEB_CONFIG_FILE" group:"Prometheus" help:"Serve --metrics-addr with this exporter-toolkit web configuration: TLS, client certificates, basic auth users (as Prometheus exporters take it). A scraper of /probe is then its basic auth user, or its client certificate's common name."`
	// ModulesFile is a module file in blackbox_exporter's format; empty
	// serves the default modules. It is read again when it changes
	// (looked at once a second at most) and on Reload.
	ModulesFile string `flag:"modules-file" env:"NETPROBE_MODULES_FILE" group:"Prometheus" help:"Serve /probe (blackbox_exporter's multi-target endpoint, on --metrics-addr) with the modules of this file, in blackbox_exporter's format: its tcp and icmp modules run, those of its other probers are listed as not run. Reloaded when it changes or on SIGHUP; a file that does not load leaves the modules as they were. Without it: tcp_connect, tls_connect, udp and PROTO_starttls."`
	// ScrapeTimeoutOffset is taken off a scrape's timeout for its probe's.
	ScrapeTimeoutOffset time.Duration `flag:"scrape-timeout-offset" env:"NETPROBE_SCRAPE_TIMEOUT_OFFSET" default:"500ms" group:"Prometheus" help:"Taken off a scrape's timeout (X-Prometheus-Scrape-Timeout-Seconds) for its probe's, so that the answer arrives in time."`
	// MetricsMaxConns caps the listener's open connections, and
	// MetricsMaxSourceConns those of one source address (an IPv4 address
	// or IPv6 /64): twice the probes a caller may run at once, each scrape
	// over a connection of its own, leaving room for the idle connections
	// of its other jobs (its /metrics, a kubelet). MetricsIdleTimeout
	// closes a keep-alive connection idle that long.
	MetricsMaxConns       int           `flag:"metrics-max-connections" env:"NETPROBE_METRICS_MAX_CONNECTIONS" default:"256" group:"Prometheus" help:"Most connections open at once on --metrics-addr; one more takes the place of the one idle longest, or is closed as it is accepted when none is idle."`
	MetricsMaxSourceConns int           `flag:"metrics-max-connections-per-source" env:"NETPROBE_METRICS_MAX_CONNECTIONS_PER_SOURCE" default:"128" group:"Prometheus" help:"Most connections open at once on --metrics-addr from one source (an IPv4 address or IPv6 /64); one more takes the place of that source's connection idle longest, or is closed as it is accepted."`
	MetricsIdleTimeout    time.Duration `flag:"metrics-idle-timeout" env:"NETPROBE_METRICS_IDLE_TIMEOUT" default:"1m0s" group:"Prometheus" help:"Close a keep-alive connection of --metrics-addr idle this long."`
	// PublicStatus serves /metrics, the page and its reports to anyone;
	// without it they need what /probe needs.
	PublicStatus bool `flag:"public-status" env:"NETPROBE_PUBLIC_STATUS" group:"Prometheus" help:"Serve /metrics, the page at / and its reports (/probes/ID) to anyone. Without it, they need the credentials /probe needs (a bearer token with --tokens-file, a user with --web-config-file's basic_auth_users). /healthz needs none either way."`
}

// Deps are what the metrics listener serves from, which the server that
// assembles probed hands it.
type Deps struct {
	// Admission names every request's caller and charges its scrapes.
	Admission *admission.Admission
	// Prober runs /probe's probes, with Modules' modules.
	Prober  Prober
	Modules *modules.Store
	// Fleet runs /probe's probes from the nodes of from=SELECTOR.
	Fleet Fleet
	// Limits are the probe service's: a scrape takes MaxTimeout at most.
	Limits service.Limits
	// Gatherer is served at /metrics, Health at /healthz, Page at / and
	// /probes/ID.
	Gatherer prometheus.Gatherer
	Health   func(context.Context) healthpb.HealthCheckResponse_ServingStatus
	Page     *statuspage.Page
	// Reload loads every file probed reads again, for POST /-/reload.
	Reload func() error
	// Observe records a probe of /probe that failed before it reached
	// Prober (a target that cannot be probed), as the probe service
	// records the probes it runs.
	Observe func(context.Context, service.Report)
	// Connections counts the listener's open connections, and Refused
	// the connections it refuses or evicts, by limit.
	Connections prometheus.Gauge
	Refused     func(limit string)
	Logger      *slog.Logger
}

// Server serves the metrics listener (probed --metrics-addr): /metrics,
// /healthz, blackbox_exporter's /probe and the status page, behind
// exporter-toolkit's web configuration, held to what the gRPC server is
// held to: timeouts on each phase of a request, caps on connections, in
// all and per source, failed passwords charged before they cost a bcrypt,
// and a drain that lets the scrapes in flight finish.
type Server struct {
	cfg    Config
	deps   Deps
	http   *http.Server
	logger *slog.Logger
	// handler is what exporter-toolkit's handler serves.
	handler http.Handler
	web     *webConfig
	// reloading is held while POST /-/reload runs.
	reloading sync.Mutex
	auth      *basicAuthGuard
	// ctx is every request's; cut ends it, with service.ErrShutdown, as
	// the drain's grace period ends.
	ctx   context.Context
	cut   context.CancelCauseFunc
	front sync.Once

	mu       sync.Mutex
	draining bool
	active   int
	// idle, while draining, is closed when no request is left.
	idle chan struct{}
}

// New builds the metrics listener's server; ctx is the parent of its
// requests' contexts.
func New(ctx context.Context, cfg Config, deps Deps) *Server {
	web := &webConfig{path: cfg.WebConfigFile}
	m := &Server{cfg: cfg, deps: deps, logger: deps.Logger, web: web, auth: newBasicAuthGuard(web, deps.Admission)}
	sc := &scraper{admission: deps.Admission, prober: deps.Prober, fleet: deps.Fleet, modules: deps.Modules, web: web, offset: cfg.ScrapeTimeoutOffset,
		maxTimeout: deps.Limits.MaxTimeout, public: cfg.PublicStatus, observe: deps.Observe, logger: deps.Logger}
	m.handler = m.routes(sc)
	m.ctx, m.cut = context.WithCancelCause(ctx)
	m.http = &http.Server{
		Handler:           markPassed(m.handler),
		ReadHeaderTimeout: metricsReadHeaderTimeout,
		// A scrape may run as long as its probe, at most MaxTimeout. Past
		// the read timeout, the server cancels the request's context; past
		// the write timeout, its answer is lost.
		ReadTimeout:    deps.Limits.MaxTimeout + scrapeSlack,
		WriteTimeout:   deps.Limits.MaxTimeout + scrapeSlack,
		IdleTimeout:    cfg.MetricsIdleTimeout,
		MaxHeaderBytes: metricsMaxHeaderBytes,
		BaseContext:    func(net.Listener) context.Context { return m.ctx },
		ConnContext:    m.connContext,
		// A keep-alive connection waiting idle between requests may be
		// closed to make room for a new one when the connection caps are
		// full (admission.ConnLimiter); one serving a request may not.
		ConnState: func(c net.Conn, st http.ConnState) {
			switch st {
			case http.StateActive:
				admission.SetEvictable(c, false)
			case http.StateIdle:
				admission.SetEvictable(c, true)
			}
		},
	}
	return m
}

// Handler is what the listener serves, without its web configuration and
// the limits it is held to: for tests, and for serving it some other way.
func (m *Server) Handler() http.Handler { return m.handler }

// routes are the listener's: /metrics, /healthz, /probe, POST /-/reload,
// and the page at / with the recent probes' reports at /probes/ID. All
// but /healthz need the credentials /probe needs, unless
// Config.PublicStatus (which /probe and /-/reload need either way).
func (m *Server) routes(sc *scraper) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", sc.guard(promhttp.HandlerFor(m.deps.Gatherer, promhttp.HandlerOpts{})))
	mux.Handle("/healthz", healthHandler(m.deps.Health))
	mux.Handle("/probe", sc)
	mux.Handle("POST /-/reload", sc.require(http.HandlerFunc(m.reload)))
	m.deps.Page.Routes(mux, sc.guard)
	// No answer of the listener is to be read as another type than it
	// says: a report repeats what targets sent.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, r)
	})
}

// reload serves POST /-/reload, as blackbox_exporter and Prometheus do:
// every file probed reads is loaded again; 200 when all of them loaded,
// 500 with why the others did not (what they held stays in use).
func (m *Server) reload(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	// One at a time: a module file of thousands of modules takes seconds.
	if !m.reloading.TryLock() {
		http.Error(w, "a reload is under way; try again later", http.StatusTooManyRequests)
		return
	}
	defer m.reloading.Unlock()
	if err := m.deps.Reload(); err != nil {
		http.Error(w, "failed to reload config: "+err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, "reloaded")
}

// healthHandler mirrors the gRPC health of the probe service for checkers
// that speak only HTTP, or that cannot reach a TLS gRPC port (the
// kubelet's gRPC probes are plaintext): 200 when SERVING, 503 else. It
// needs no credentials, as gRPC health checks need no token.
func healthHandler(health func(context.Context) healthpb.HealthCheckResponse_ServingStatus) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := health(r.Context())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if st != healthpb.HealthCheckResponse_SERVING {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, st)
	})
}

// Serve serves lis until Stop, with the web configuration of
// Config.WebConfigFile (TLS, client certificates, basic auth users).
func (m *Server) Serve(lis net.Listener) error {
	systemd := false
	flags := &web.FlagConfig{WebListenAddresses: &[]string{}, WebSystemdSocket: &systemd, WebConfigFile: &m.cfg.WebConfigFile}
	limits := admission.NewConnLimiter(m.cfg.MetricsMaxConns, m.cfg.MetricsMaxSourceConns, m.deps.Connections, func(reason string) {
		m.deps.Refused("metrics_" + reason)
	})
	// exporter-toolkit logs what it serves ("TLS is disabled."): of this
	// listener, not the gRPC one.
	if err := web.Serve(limits.Listener(lis), m.http, flags, m.logger.With("listener", "metrics")); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// connContext puts the server's own handling in front of exporter-toolkit's.
// web.Serve sets the server's handler to its own (basic auth, the
// configured headers), wrapping ours, before it serves; the first
// connection's ConnContext runs after that, and before any request is
// read, so that wrapping the handler here puts the guard against password
// floods in front of the bcrypt.
func (m *Server) connContext(ctx context.Context, _ net.Conn) context.Context {
	m.front.Do(func() { m.http.Handler = m.wrap(m.http.Handler) })
	return ctx
}

// wrap is the handling every request gets first: a count of the requests
// in flight for the drain, the close of a connection whose request has a
// body, 503 for a scrape that arrives while draining, /healthz without
// credentials, and the basic auth guard.
func (m *Server) wrap(next http.Handler) http.Handler {
	guarded := m.auth.wrap(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		draining := m.begin()
		defer m.end()
		if r.ContentLength != 0 {
			// No route reads a body. A request that announced one is
			// answered without it, and its connection closed: otherwise
			// the server would wait, up to the read timeout, to discard a
			// body the client need never send, with the connection busy,
			// which no new one may evict. The deadline makes that wait
			// fail at once.
			w.Header().Set("Connection", "close")
			http.NewResponseController(w).SetReadDeadline(time.Now())
		}
		switch {
		case draining && r.URL.Path == "/probe":
			w.Header().Set("Connection", "close")
			http.Error(w, service.ErrShutdown.Error(), http.StatusServiceUnavailable)
		case r.URL.Path == "/healthz":
			// Health needs no credentials, as gRPC's needs no token: the
			// kubelet's probes carry none. It says SERVING or not.
			m.handler.ServeHTTP(w, r)
		default:
			guarded.ServeHTTP(w, r)
		}
	})
}

// begin counts a request in flight, and reports whether the server is
// draining.
func (m *Server) begin() (draining bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.active++
	return m.draining
}

func (m *Server) end() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.active--; m.active == 0 && m.idle != nil {
		close(m.idle)
		m.idle = nil
	}
}

// Drain starts the metrics server's shutdown: a new scrape is refused
// (503), answers close their connections, and idle connections are
// closed; the requests in flight get grace to finish. A little before it
// ends (service.CutMargin, as for gRPC calls), the scrapes left are cut: their
// probes end and each answers 503 (see scraper.ServeHTTP). It returns when
// no request is left, or when grace is over. The listener still answers
// (health checks say NOT_SERVING) until Stop.
func (m *Server) Drain(grace time.Duration) {
	m.mu.Lock()
	m.draining = true
	active := m.active
	idle := make(chan struct{})
	if active == 0 {
		close(idle)
	} else {
		m.idle = idle
	}
	m.mu.Unlock()
	m.http.SetKeepAlivesEnabled(false)
	m.logger.Info("draining the metrics listener", "requests", active, "grace", grace)

	margin := service.CutMargin(grace)
	cut := time.NewTimer(grace - margin)
	defer cut.Stop()
	select {
	case <-idle:
		return
	case <-cut.C:
	}
	m.logger.Warn("grace period ending: cutting scrapes short")
	m.cut(service.ErrShutdown)
	end := time.NewTimer(margin)
	defer end.Stop()
	select {
	case <-idle:
	case <-end.C:
	}
}

// Stop closes the listener, and each connection once its answer is
// written, or within stopWait at most.
func (m *Server) Stop() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), stopWait)
	defer cancel()
	if err := m.http.Shutdown(ctx); err != nil {
		m.http.Close()
	}
}
