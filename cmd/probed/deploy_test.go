package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
)

// writeFile writes text to a new file in the test's temporary directory.
func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const (
	aliceToken = "alice-0123456789abcdef"
	bobToken   = "bob-0123456789abcdef"
)

// tokensFile names two callers, alice and bob.
func tokensFile(t *testing.T) string {
	return writeFile(t, "tokens", "# name token\nalice "+aliceToken+"\nbob "+bobToken+"\n")
}

// TestAuth runs probed with TLS and bearer tokens, then with mutual TLS.
func TestAuth(t *testing.T) {
	t.Parallel()
	ca := probetest.NewCA(t)
	certFile, keyFile := probetest.WriteFiles(t, t.TempDir(), ca.Issue(t, "probed", true))
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0",
		"--tls-cert="+certFile, "--tls-key="+keyFile, "--tokens-file="+tokensFile(t)))
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
			c, err := client.Dial(p.Addr, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.ResolveService(probetest.Context(t), "tcp", "https")
			if got := status.Code(err); got != tt.want {
				t.Errorf("ResolveService: %v, want %v", err, tt.want)
			}
		})
	}

	t.Run("health without a token", func(t *testing.T) {
		c, err := client.Dial(p.Addr, client.WithTLS(trust))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if st, err := c.Health(probetest.Context(t)); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Health = %v, %v; want SERVING", st, err)
		}
	})

	t.Run("mutual TLS", func(t *testing.T) {
		clientCA := probetest.NewCA(t)
		caFile := writeFile(t, "client-ca.pem", string(clientCA.PEM))
		policyFile := writeFile(t, "policy", "caller team-a allow 127.0.0.3\n")
		p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0",
			"--tls-cert="+certFile, "--tls-key="+keyFile, "--tls-client-ca="+caFile, "--policy-file="+policyFile))
		allowed := probetest.Listen(t, "127.0.0.3:0", nil)
		other := probetest.Listen(t, "127.0.0.4:0", nil)
		dial := func(cert tls.Certificate) *client.Client {
			c, err := client.Dial(p.Addr, client.WithTLS(&tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{cert}}))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
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

// TestTLSReload swaps the certificate files, with SIGHUP and then without:
// new connections get the new certificate without a restart.
func TestTLSReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	oldCA, newCA := probetest.NewCA(t), probetest.NewCA(t)
	certFile, keyFile := probetest.WriteFiles(t, dir, oldCA.Issue(t, "probed", true))
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--tls-cert="+certFile, "--tls-key="+keyFile))
	health := func(ca *probetest.CA) error {
		c, err := client.Dial(p.Addr, client.WithTLS(&tls.Config{RootCAs: ca.Pool}))
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
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The reload is asynchronous: wait for the new certificate.
	deadline := time.Now().Add(probetest.Timeout)
	for health(newCA) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the new certificate was never served")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := health(oldCA); status.Code(err) != codes.Unavailable {
		t.Errorf("the old certificate's CA still works: %v", err)
	}

	// Without a signal, the files' change alone is noticed on a handshake
	// (at most once a second).
	thirdCA := probetest.NewCA(t)
	probetest.WriteFiles(t, dir, thirdCA.Issue(t, "probed", true))
	for health(thirdCA) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the changed files were never served")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPlaintextRefused checks that probed will not serve plaintext on a
// network address unless told to.
func TestPlaintextRefused(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(probetest.Context(t), probedBin, "--listen=0.0.0.0:0").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "refusing to serve plaintext on 0.0.0.0:0: give --tls-cert and --tls-key, or --plaintext to accept it") {
		t.Errorf("probed --listen=0.0.0.0:0: %v\n%s", err, out)
	}
}

// TestLimits runs more probes than probed allows at once, and faster.
func TestLimits(t *testing.T) {
	t.Parallel()
	ca := probetest.NewCA(t)
	certFile, keyFile := probetest.WriteFiles(t, t.TempDir(), ca.Issue(t, "probed", true))
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0",
		"--tls-cert="+certFile, "--tls-key="+keyFile, "--tokens-file="+tokensFile(t),
		"--max-in-flight=3", "--max-in-flight-per-caller=2", "--rate=1000", "--burst=1000",
		"--max-fetch-bytes=10"))
	hold := probetest.Listen(t, "127.0.0.1:0", nil)
	dial := func(token string) *client.Client {
		c, err := client.Dial(p.Addr, client.WithTLS(&tls.Config{RootCAs: ca.Pool}), client.WithBearerToken(token))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
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
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--rate=0.001", "--burst=2"))
	c, err := client.Dial(p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
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

// TestMetrics scrapes probed after a probe that worked and one that failed.
func TestMetrics(t *testing.T) {
	t.Parallel()
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--deny=127.0.0.2"))
	c, err := client.Dial(p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
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

	families := scrape(t, "http://"+p.MetricsAddr+"/metrics")
	for _, want := range []struct {
		family string
		labels map[string]string
		value  float64
	}{
		{"netprobe_probes_total", map[string]string{"method": "Connect", "outcome": "ok", "stage": "", "reason": ""}, 1},
		{"netprobe_probes_total", map[string]string{"method": "Connect", "outcome": "failed", "stage": "STAGE_CONNECT", "reason": "REASON_REFUSED"}, 1},
		{"netprobe_probes_total", map[string]string{"method": "Connect", "outcome": "denied", "stage": "STAGE_POLICY", "reason": "REASON_DENIED"}, 1},
		{"netprobe_policy_refusals_total", map[string]string{"rule": "127.0.0.2"}, 1},
		{"netprobe_probe_phase_seconds", map[string]string{"method": "Connect", "phase": "connect"}, 2},
		{"netprobe_probes_in_flight", nil, 0},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Connect", "grpc_code": "OK"}, 2},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Connect", "grpc_code": "PermissionDenied"}, 1},
	} {
		if got, ok := metricValue(families[want.family], want.labels); !ok || got != want.value {
			t.Errorf("%s%v = %v (found %v), want %v", want.family, want.labels, got, ok, want.value)
		}
	}
}

// scrape reads a Prometheus text exposition with Prometheus's own parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	_, body := httpGet(t, url)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return families
}

// metricValue is the value of the series with exactly these labels (for a
// histogram, its count).
func metricValue(f *dto.MetricFamily, labels map[string]string) (float64, bool) {
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range labels {
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

// TestDrain sends SIGTERM during a Fetch: health flips, new calls are
// refused, the Fetch finishes within the grace period, and probed exits 0.
func TestDrain(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("first\n"))
		select {
		case <-release:
		case <-time.After(probetest.Timeout):
		}
		c.Write([]byte("last\n"))
		c.Close()
	})
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--shutdown-grace=10s"))
	c, err := client.Dial(p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := probetest.Context(t)
	watch, err := healthpb.NewHealthClient(dial(t, p.Addr)).Watch(ctx, &healthpb.HealthCheckRequest{Service: "netprobe.v1.ProbeService"})
	if err != nil {
		t.Fatal(err)
	}
	if hr, err := watch.Recv(); err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v, %v", hr, err)
	}
	f, err := c.Fetch(ctx, "tcp", tg.Addr(), client.FetchOptions{KeepWriteOpen: true, Timeout: probetest.Timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b, err := f.Next(); err != nil || string(b) != "first\n" {
		t.Fatalf("first: %q, %v", b, err)
	}

	if code, body := httpGet(t, "http://"+p.MetricsAddr+"/healthz"); code != http.StatusOK || body != "SERVING\n" {
		t.Errorf("/healthz: %d %q, want 200 SERVING", code, body)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if hr, err := watch.Recv(); err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("after SIGTERM, watch: %v, %v; want NOT_SERVING", hr, err)
	}
	if _, err := c.ResolveService(ctx, "tcp", "https"); status.Code(err) != codes.Unavailable {
		t.Errorf("a new call while draining: %v, want Unavailable", err)
	}
	if code, body := httpGet(t, "http://"+p.MetricsAddr+"/healthz"); code != http.StatusServiceUnavailable || body != "NOT_SERVING\n" {
		t.Errorf("/healthz while draining: %d %q, want 503 NOT_SERVING", code, body)
	}
	close(release)
	rest, err := io.ReadAll(f)
	if err != nil || string(rest) != "last\n" || f.Summary().EndReason != client.EndEOF {
		t.Errorf("the in-flight Fetch: %q, %v; want the rest and a clean end", rest, err)
	}
	select {
	case err := <-p.Exited:
		if err != nil {
			t.Errorf("probed exited with %v, want 0", err)
		}
	case <-time.After(probetest.Timeout):
		t.Fatal("probed did not exit")
	}
}

// TestDrainGraceOver sends SIGTERM during a Fetch that outlasts the grace
// period: the Fetch is cut and ends with its summary (RECEIVE /
// SERVER_SHUTDOWN), the target connection is closed, and probed exits 0.
func TestDrainGraceOver(t *testing.T) {
	t.Parallel()
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) { c.Write([]byte("first\n")) })
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--shutdown-grace=300ms"))
	c, err := client.Dial(p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f, err := c.Fetch(probetest.Context(t), "tcp", tg.Addr(), client.FetchOptions{KeepWriteOpen: true, Timeout: probetest.Timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Next(); err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := probetest.WaitClosed(<-tg.Accepted); err != nil {
		t.Errorf("the target connection outlived the grace period: %v", err)
	}
	var pe *client.ProbeError
	if _, err := io.ReadAll(f); !errors.As(err, &pe) || pe.Stage != client.StageReceive || pe.Reason != client.ReasonServerShutdown || f.Summary() == nil || f.Summary().EndReason != client.EndError {
		t.Errorf("the cut Fetch ended with %v, summary %v; want RECEIVE / SERVER_SHUTDOWN in the summary", err, f.Summary())
	}
	select {
	case err := <-p.Exited:
		if err != nil {
			t.Errorf("probed exited with %v, want 0", err)
		}
	case <-time.After(probetest.Timeout):
		t.Fatal("probed did not exit")
	}
}

// httpGet returns the status code and body of a GET.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(probetest.Context(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}
