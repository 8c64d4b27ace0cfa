package exporter

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/audit"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/internal/settings"
	"github.com/netprobe/netprobe/internal/statuspage"
	"github.com/netprobe/netprobe/service"
)

const testTimeout = 10 * time.Second

// newServer builds a metrics listener's server as probed would, with cfg
// and the probe service's limits, on a service of its own.
func newServer(t *testing.T, cfg Config, limits service.Limits) *Server {
	t.Helper()
	if err := settings.Defaults(&cfg); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	refusals := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "refusals"}, []string{"limit"})
	var ac admission.Config
	if err := settings.Defaults(&ac); err != nil {
		t.Fatal(err)
	}
	a, err := admission.New(ac, admission.Metrics{Refusals: refusals, InFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "in_flight"})})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Config{Limits: limits, Limiter: a})
	if err != nil {
		t.Fatal(err)
	}
	check, err := ModuleCheck(cfg, svc.Limits(), nil)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := modules.Open(cfg.ModulesFile, check, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rec := audit.New(slog.New(slog.DiscardHandler), reg, nil)
	page := statuspage.New(rec, func() statuspage.Status { return statuspage.Status{Modules: mods.Set()} }, slog.New(slog.DiscardHandler))
	return New(t.Context(), cfg, Deps{
		Admission: a, Prober: svc, Modules: mods, Limits: svc.Limits(), Gatherer: reg,
		Health: func(context.Context) healthpb.HealthCheckResponse_ServingStatus {
			return healthpb.HealthCheckResponse_SERVING
		},
		Page:        page,
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "connections"}),
		Refused:     func(limit string) { refusals.WithLabelValues(limit).Inc() },
		Logger:      slog.New(slog.DiscardHandler),
	})
}

// serveMetrics serves m on loopback for the length of the test, after
// change has its way with it, and returns its address.
func serveMetrics(t *testing.T, m *Server, change func(*Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	change(m)
	served := make(chan error, 1)
	go func() { served <- m.Serve(lis) }()
	t.Cleanup(func() {
		m.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// TestMetricsReadHeaderTimeout plays a slow client: headers begun and
// never finished. The connection is closed once the read-header timeout
// passes (the server's, scaled down from 10 s to 200 ms), unanswered.
func TestMetricsReadHeaderTimeout(t *testing.T) {
	t.Parallel()
	addr := serveMetrics(t, newServer(t, Config{}, service.Limits{}), func(m *Server) { m.http.ReadHeaderTimeout /= 50 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: probed\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) || strings.Contains(string(b), "SERVING") {
		t.Errorf("a request whose headers never end: %q, %v; want the connection closed unanswered", b, err)
	}
}

// TestMetricsLongestScrape scrapes a probe that lasts its whole timeout,
// the server's largest (--max-timeout, 2 s here): the answer arrives,
// since the listener's read and write timeouts leave it that long and
// more.
func TestMetricsLongestScrape(t *testing.T) {
	t.Parallel()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	modules := filepath.Join(t.TempDir(), "modules.yml")
	if err := os.WriteFile(modules, []byte("modules:\n  wait:\n    prober: tcp\n    tcp:\n      query_response:\n      - expect: ^ready$\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newServer(t, Config{ModulesFile: modules}, service.Limits{MaxTimeout: 2 * time.Second, DefaultTimeout: time.Second})
	addr := serveMetrics(t, s, func(*Server) {})
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/probe?module=wait&target="+silent.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "60")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("a scrape of %v: %v", time.Since(start), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "\nprobe_success 0\n") || !strings.Contains(string(body), "REASON_TIMEOUT") {
		t.Errorf("a scrape of %v: %d, %v\n%s", time.Since(start), resp.StatusCode, err, body)
	}
}

// TestMetricsDrain drains the metrics server alone, with a scrape in
// flight: a new scrape is refused with 503 at once, Drain waits for the
// one in flight, which answers in full once its probe ends.
func TestMetricsDrain(t *testing.T) {
	t.Parallel()
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	modules := filepath.Join(t.TempDir(), "modules.yml")
	if err := os.WriteFile(modules, []byte("modules:\n  wait:\n    prober: tcp\n    tcp:\n      query_response:\n      - expect: ^ready$\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newServer(t, Config{ModulesFile: modules}, service.Limits{})
	var m *Server
	addr := serveMetrics(t, s, func(ms *Server) { m = ms })
	get := func(path string) (int, string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return 0, "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	type answer struct {
		code int
		body string
		err  error
	}
	inFlight := make(chan answer, 1)
	go func() {
		code, body, err := get("/probe?module=wait&target=" + target.Addr().String())
		inFlight <- answer{code, body, err}
	}()
	held, err := target.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	drained := make(chan struct{})
	go func() {
		m.Drain(testTimeout)
		close(drained)
	}()
	deadline := time.Now().Add(testTimeout)
	for {
		m.mu.Lock()
		draining := m.draining
		m.mu.Unlock()
		if draining {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server is not draining")
		}
		time.Sleep(time.Millisecond)
	}
	if code, body, err := get("/probe?module=wait&target=" + target.Addr().String()); code != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
		t.Errorf("a new scrape while draining: %d %q %v, want 503", code, body, err)
	}
	select {
	case <-drained:
		t.Fatal("Drain returned with a scrape in flight")
	default:
	}
	io.WriteString(held, "ready\n")
	if a := <-inFlight; a.err != nil || a.code != http.StatusOK || !strings.Contains(a.body, "\nprobe_success 1\n") {
		t.Errorf("the scrape in flight: %d, %v\n%s", a.code, a.err, a.body)
	}
	select {
	case <-drained:
	case <-time.After(testTimeout):
		t.Fatal("Drain did not return once the scrape was answered")
	}
}

// TestMetricsHeaderBytes sends a request with 100 KiB of headers: it is
// refused (431) unread past the cap of 64 KiB.
func TestMetricsHeaderBytes(t *testing.T) {
	t.Parallel()
	addr := serveMetrics(t, newServer(t, Config{}, service.Limits{}), func(*Server) {})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	go io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: probed\r\nX-Big: "+strings.Repeat("x", 100<<10)+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("100 KiB of headers: %v, %v; want 431", resp, err)
	}
}
