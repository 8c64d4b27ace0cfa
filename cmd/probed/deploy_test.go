package main

import (
	"errors"
	"io"
	"maps"
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

// scrape reads a Prometheus text exposition with Prometheus's own parser.
// It shows alice's token, which a probed with tokens wants for /metrics
// (and one without ignores).
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	_, body := httpDo(t, url, http.Header{"Authorization": {"Bearer " + aliceToken}})
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
	waitExit(t, p)
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
	waitExit(t, p)
}

// httpGet returns the status code and body of a GET.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	return httpDo(t, url, nil)
}

// httpDo returns the status code and body of a GET with header.
func httpDo(t *testing.T, url string, header http.Header) (int, string) {
	t.Helper()
	return httpSend(t, http.MethodGet, url, header)
}

// httpSend returns the status code and body of a bodiless request.
func httpSend(t *testing.T, method, url string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(probetest.Context(t), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(req.Header, header)
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
