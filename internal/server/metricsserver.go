package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/exporter-toolkit/web"

	"github.com/netprobe/netprobe/internal/admission"
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

// MetricsServer serves the metrics listener (probed --metrics-addr):
// MetricsHandler behind exporter-toolkit's web configuration, held to what
// the gRPC server is held to: timeouts on each phase of a request, caps on
// connections, in all and per source, failed passwords charged before
// they cost a bcrypt, and a drain that lets the scrapes in flight finish.
type MetricsServer struct {
	s    *Server
	http *http.Server
	// handler is MetricsHandler, which exporter-toolkit's serves.
	handler http.Handler
	auth    *basicAuthGuard
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

// NewMetricsServer builds the metrics listener's server; ctx is the
// parent of its requests' contexts.
func (s *Server) NewMetricsServer(ctx context.Context) *MetricsServer {
	m := &MetricsServer{s: s, handler: s.MetricsHandler(), auth: newBasicAuthGuard(s.scraper.web, s.admission)}
	m.ctx, m.cut = context.WithCancelCause(ctx)
	m.http = &http.Server{
		Handler:           markPassed(m.handler),
		ReadHeaderTimeout: metricsReadHeaderTimeout,
		// A scrape may run as long as its probe, at most MaxTimeout. Past
		// the read timeout, the server cancels the request's context; past
		// the write timeout, its answer is lost.
		ReadTimeout:    s.cfg.MaxTimeout + scrapeSlack,
		WriteTimeout:   s.cfg.MaxTimeout + scrapeSlack,
		IdleTimeout:    s.cfg.MetricsIdleTimeout,
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

// Serve serves lis until Stop, with the web configuration of
// Config.WebConfigFile (TLS, client certificates, basic auth users).
func (m *MetricsServer) Serve(lis net.Listener) error {
	systemd := false
	flags := &web.FlagConfig{WebListenAddresses: &[]string{}, WebSystemdSocket: &systemd, WebConfigFile: &m.s.cfg.WebConfigFile}
	limits := admission.NewConnLimiter(m.s.cfg.MetricsMaxConns, m.s.cfg.MetricsMaxSourceConns, m.s.metrics.metricsConnections, func(reason string) {
		m.s.metrics.limitRefusals.WithLabelValues("metrics_" + reason).Inc()
	})
	if err := web.Serve(limits.Listener(lis), m.http, flags, m.s.logger); !errors.Is(err, http.ErrServerClosed) {
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
func (m *MetricsServer) connContext(ctx context.Context, _ net.Conn) context.Context {
	m.front.Do(func() { m.http.Handler = m.wrap(m.http.Handler) })
	return ctx
}

// wrap is the handling every request gets first: a count of the requests
// in flight for the drain, 503 for a scrape that arrives while draining,
// /healthz without credentials, and the basic auth guard.
func (m *MetricsServer) wrap(next http.Handler) http.Handler {
	guarded := m.auth.wrap(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		draining := m.begin()
		defer m.end()
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
func (m *MetricsServer) begin() (draining bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.active++
	return m.draining
}

func (m *MetricsServer) end() {
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
// ends (cutMargin, as for gRPC calls), the scrapes left are cut: their
// probes end and each answers 503 (see scraper.ServeHTTP). It returns when
// no request is left, or when grace is over. The listener still answers
// (health checks say NOT_SERVING) until Stop.
func (m *MetricsServer) Drain(grace time.Duration) {
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
	m.s.logger.Info("draining the metrics listener", "requests", active, "grace", grace)

	margin := cutMargin(grace)
	cut := time.NewTimer(grace - margin)
	defer cut.Stop()
	select {
	case <-idle:
		return
	case <-cut.C:
	}
	m.s.logger.Warn("grace period ending: cutting scrapes short")
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
func (m *MetricsServer) Stop() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), stopWait)
	defer cancel()
	if err := m.http.Shutdown(ctx); err != nil {
		m.http.Close()
	}
}
