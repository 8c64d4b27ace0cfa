package server_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

const (
	aliceToken = "alice-0123456789abcdef"
	bobToken   = "bob-0123456789abcdef"
)

// tokens names two callers, alice and bob.
var tokens = map[string]string{"alice": aliceToken, "bob": bobToken}

// writeFile writes text to a new file in the test's temporary directory.
func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// withTLS serves TLS with the certificate and key files.
func withTLS(certFile, keyFile string) probetest.Option {
	return probetest.WithConfig(func(c *server.Config) { c.TLSCert, c.TLSKey = certFile, keyFile })
}

// dialClient dials addr for the length of the test.
func dialClient(t *testing.T, addr string, opts ...client.DialOption) *client.Client {
	t.Helper()
	c, err := client.Dial(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestAuth serves TLS and bearer tokens, then mutual TLS.
func TestAuth(t *testing.T) {
	t.Parallel()
	ca := probetest.NewCA(t)
	certFile, keyFile := probetest.WriteFiles(t, t.TempDir(), ca.Issue(t, "probed", true))
	srv := probetest.Start(t, withTLS(certFile, keyFile), probetest.WithTokens(t, tokens))
	trust := &tls.Config{RootCAs: ca.Pool}

	tests := []struct {
		name string
		opts []client.DialOption
		want codes.Code
	}{
		{"right token", []client.DialOption{client.WithTLS(trust), client.WithBearerToken(aliceToken)}, codes.OK},
		{"wrong token", []client.DialOption{client.WithTLS(trust), client.WithBearerToken("mallory-0123456789abcdef")}, codes.Unauthenticated},
		{"no token", []client.DialOption{client.WithTLS(trust)}, codes.Unauthenticated},
		{"plaintext", nil, codes.Unavailable},
		{"untrusted server", []client.DialOption{client.WithTLS(&tls.Config{RootCAs: probetest.NewCA(t).Pool}), client.WithBearerToken(aliceToken)}, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialClient(t, srv.Addr, tt.opts...)
			_, err := c.ResolveService(probetest.Context(t), "tcp", "https")
			if got := status.Code(err); got != tt.want {
				t.Errorf("ResolveService: %v, want %v", err, tt.want)
			}
		})
	}

	t.Run("health without a token", func(t *testing.T) {
		c := dialClient(t, srv.Addr, client.WithTLS(trust))
		if st, err := c.Health(probetest.Context(t)); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Health = %v, %v; want SERVING", st, err)
		}
	})

	t.Run("mutual TLS", func(t *testing.T) {
		clientCA := probetest.NewCA(t)
		caFile := writeFile(t, "client-ca.pem", string(clientCA.PEM))
		srv := probetest.Start(t, withTLS(certFile, keyFile), probetest.WithPolicy("caller team-a allow 127.0.0.3"),
			probetest.WithConfig(func(c *server.Config) { c.TLSClientCA = caFile }))
		allowed := probetest.Listen(t, "127.0.0.3:0", nil)
		other := probetest.Listen(t, "127.0.0.4:0", nil)
		dial := func(cert tls.Certificate) *client.Client {
			return dialClient(t, srv.Addr, client.WithTLS(&tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{cert}}))
		}
		teamA := dial(clientCA.Issue(t, "team-a", false))
		if _, err := teamA.Connect(probetest.Context(t), "tcp", allowed.Addr(), client.ConnectOptions{}); err != nil {
			t.Errorf("team-a to its own address: %v", err)
		}
		// The certificate's name is the caller's identity: team-a's rules
		// apply.
		_, err := teamA.Connect(probetest.Context(t), "tcp", other.Addr(), client.ConnectOptions{})
		if pe, ok := client.Refusal(err); !ok || pe.Rule != "not covered by caller team-a's allow rules" {
			t.Errorf("team-a elsewhere: %v, want a refusal by team-a's rules", err)
		}
		stranger := dial(probetest.NewCA(t).Issue(t, "team-a", false))
		if _, err := stranger.ResolveService(probetest.Context(t), "tcp", "https"); status.Code(err) != codes.Unavailable {
			t.Errorf("a certificate from another CA: %v, want the handshake refused (Unavailable)", err)
		}
	})
}

// TestTLSReload swaps the certificate files, reloading them as SIGHUP
// does and then without being asked: new connections get the new
// certificate without a restart.
func TestTLSReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	oldCA, newCA := probetest.NewCA(t), probetest.NewCA(t)
	certFile, keyFile := probetest.WriteFiles(t, dir, oldCA.Issue(t, "probed", true))
	srv := probetest.Start(t, withTLS(certFile, keyFile))
	health := func(ca *probetest.CA) error {
		c, err := client.Dial(srv.Addr, client.WithTLS(&tls.Config{RootCAs: ca.Pool}))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Health(probetest.Context(t))
		return err
	}
	if err := health(oldCA); err != nil {
		t.Fatalf("before the reload: %v", err)
	}
	probetest.WriteFiles(t, dir, newCA.Issue(t, "probed", true))
	if err := srv.Server.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := health(newCA); err != nil {
		t.Errorf("after the reload: %v", err)
	}
	if err := health(oldCA); status.Code(err) != codes.Unavailable {
		t.Errorf("the old certificate's CA still works: %v", err)
	}

	// Without a reload, the files' change alone is noticed on a handshake
	// (at most once a second).
	thirdCA := probetest.NewCA(t)
	probetest.WriteFiles(t, dir, thirdCA.Issue(t, "probed", true))
	deadline := time.Now().Add(probetest.Timeout)
	for health(thirdCA) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the changed files were never served")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLimits runs more probes than the server allows at once.
func TestLimits(t *testing.T) {
	t.Parallel()
	ca := probetest.NewCA(t)
	certFile, keyFile := probetest.WriteFiles(t, t.TempDir(), ca.Issue(t, "probed", true))
	srv := probetest.Start(t, withTLS(certFile, keyFile), probetest.WithTokens(t, tokens), probetest.WithConfig(func(c *server.Config) {
		c.Admission.MaxInFlight, c.Admission.MaxInFlightPerCaller, c.Admission.Rate, c.Admission.Burst, c.MaxFetchBytes = 3, 2, 1000, 1000, 10
	}))
	hold := probetest.Listen(t, "127.0.0.1:0", nil)
	dial := func(token string) *client.Client {
		return dialClient(t, srv.Addr, client.WithTLS(&tls.Config{RootCAs: ca.Pool}), client.WithBearerToken(token))
	}
	alice, bob := dial(aliceToken), dial(bobToken)
	ctx := probetest.Context(t)

	// The byte cap first, while the server has room.
	chatty := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) { c.Write([]byte(strings.Repeat("x", 100))) })
	if _, err := alice.Fetch(ctx, "tcp", chatty.Addr(), client.FetchOptions{MaxBytes: 11}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("max_bytes over the cap: %v, want InvalidArgument", err)
	}
	f, err := alice.Fetch(ctx, "tcp", chatty.Addr(), client.FetchOptions{KeepWriteOpen: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	if err != nil || len(got) != 10 || f.Summary().EndReason != client.EndMaxBytes {
		t.Errorf("a Fetch with no max_bytes: %d bytes, %v; want the cap of 10 and END_REASON_MAX_BYTES", len(got), err)
	}
	f.Close()
	// The Fetch's place is given back once its handler has returned,
	// which may be after the client has read the summary.
	deadline := time.Now().Add(probetest.Timeout)
	for {
		if n, ok := metricValue(scrape(t, srv)["netprobe_probes_in_flight"], nil); ok && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the Fetch is still counted in flight")
		}
		time.Sleep(10 * time.Millisecond)
	}

	held := func(c *client.Client) error {
		f, err := c.Fetch(ctx, "tcp", hold.Addr(), client.FetchOptions{KeepWriteOpen: true, Timeout: probetest.Timeout})
		if err == nil {
			t.Cleanup(func() { f.Close() })
		}
		return err
	}
	for i, step := range []struct {
		c    *client.Client
		want codes.Code
		msg  string
	}{
		{alice, codes.OK, ""},
		{alice, codes.OK, ""},
		{alice, codes.ResourceExhausted, "alice is running its maximum of 2 probes at once"},
		{bob, codes.OK, ""},
		{bob, codes.ResourceExhausted, "the server is running its maximum of 3 probes; try again later"},
	} {
		err := held(step.c)
		if status.Code(err) != step.want || (step.msg != "" && status.Convert(err).Message() != step.msg) {
			t.Fatalf("probe %d: %v, want %v %q", i+1, err, step.want, step.msg)
		}
	}
}

// TestRateLimit starts probes faster than a caller's rate allows.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	srv := probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.Admission.Rate, c.Admission.Burst = 0.001, 2 }))
	c := client.New(srv.Conn)
	for i, want := range []codes.Code{codes.OK, codes.OK, codes.ResourceExhausted} {
		_, err := c.ResolveService(probetest.Context(t), "tcp", "https")
		if status.Code(err) != want {
			t.Errorf("call %d: %v, want %v", i+1, err, want)
		}
	}
	// Health checks are not probes: the rate does not apply.
	if st, err := c.Health(probetest.Context(t)); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Health = %v, %v", st, err)
	}
}

// TestMetrics scrapes the server after a probe that worked, one that
// failed and one the policy refused.
func TestMetrics(t *testing.T) {
	t.Parallel()
	srv := probetest.Start(t, probetest.WithPolicy("deny 127.0.0.2"))
	c := client.New(srv.Conn)
	up := probetest.Listen(t, "127.0.0.1:0", nil)
	ctx := probetest.Context(t)
	if _, err := c.Connect(ctx, "tcp", up.Addr(), client.ConnectOptions{}); err != nil {
		t.Fatal(err)
	}
	closed := fmt.Sprintf("127.0.0.1:%d", probetest.ClosedPort(t, "tcp", "127.0.0.1:0"))
	if _, err := c.Connect(ctx, "tcp", closed, client.ConnectOptions{}); err == nil {
		t.Fatal("a connect to a closed port worked")
	}
	if _, err := c.Connect(ctx, "tcp", "127.0.0.2:80", client.ConnectOptions{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a denied address: %v", err)
	}
	ca := probetest.NewCA(t)
	tlsUp := probetest.Listen(t, "127.0.0.1:0", func(conn net.Conn) {
		tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "localhost", true)}})
		tc.Handshake()
		tc.Close()
	})
	if _, err := c.Connect(ctx, "tcp", tlsUp.Addr(), client.ConnectOptions{TLS: &client.TLSOptions{ServerName: "localhost", CABundle: ca.PEM}}); err != nil {
		t.Fatal(err)
	}

	families := scrape(t, srv)
	for _, want := range []struct {
		family string
		labels map[string]string
		value  float64
	}{
		{"netprobe_probes_total", map[string]string{"method": "Connect", "outcome": "ok", "stage": "", "reason": ""}, 2},
		{"netprobe_probe_phase_seconds", map[string]string{"method": "Connect", "phase": "tls"}, 1},
		{"netprobe_policy_refusals_total", map[string]string{"rule": "built-in: multicast"}, 0},
		{"netprobe_probes_total", map[string]string{"method": "Connect", "outcome": "failed", "stage": "STAGE_CONNECT", "reason": "REASON_REFUSED"}, 1},
		{"netprobe_probes_total", map[string]string{"method": "Connect", "outcome": "denied", "stage": "STAGE_POLICY", "reason": "REASON_DENIED"}, 1},
		{"netprobe_policy_refusals_total", map[string]string{"rule": "127.0.0.2"}, 1},
		{"netprobe_probe_phase_seconds", map[string]string{"method": "Connect", "phase": "connect"}, 3},
		{"netprobe_probes_in_flight", nil, 0},
		{"netprobe_limit_refusals_total", map[string]string{"limit": "rate"}, 0},
		{"netprobe_transport_refusals_total", map[string]string{"reason": "stream_resets"}, 0},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Connect", "grpc_code": "OK"}, 3},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Connect", "grpc_code": "PermissionDenied"}, 1},
	} {
		if got, ok := metricValue(families[want.family], want.labels); !ok || got != want.value {
			t.Errorf("%s%v = %v (found %v), want %v", want.family, want.labels, got, ok, want.value)
		}
	}
}

// scrape reads the server's metrics with Prometheus's own parser.
func scrape(t *testing.T, srv *probetest.Server) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/metrics", nil)
	// A server with tokens shows its metrics to a caller with one, as it
	// serves /probe.
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	srv.Metrics(t).ServeHTTP(rec, req)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// metricValue is the value of the series with these labels (for a
// histogram, its count).
func metricValue(f *dto.MetricFamily, want map[string]string) (float64, bool) {
	for _, m := range f.GetMetric() {
		got := labels(m.GetLabel())
		match := true
		for k, v := range want {
			if got[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}
