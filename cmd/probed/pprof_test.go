package main

import (
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestPprof serves Go's profiler when asked, and denies its address to
// probes as it does probed's other listeners.
func TestPprof(t *testing.T) {
	t.Parallel()
	addr := probetest.FreePort(t)
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--pprof-addr="+addr))
	if page := get(t, "http://"+addr+"/debug/pprof/"); !strings.Contains(page, "goroutine") {
		t.Errorf("/debug/pprof/:\n%s", page)
	}
	c := client.New(dial(t, p.Addr))
	if _, err := c.Connect(probetest.Context(t), "tcp", addr, client.ConnectOptions{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a probe of the profiler's address: %v, want PERMISSION_DENIED", err)
	}
	// Without the flag there is none: the metrics listener has no profiler.
	resp, err := http.Get("http://" + p.MetricsAddr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/debug/pprof/ on the metrics listener: %d", resp.StatusCode)
	}
}

// TestPprofLoopbackOnly asks for the profiler on addresses other than
// loopback: probed refuses to start, naming the flag that lifts the
// refusal, before it binds anything (TestPprofNonLoopback lifts it).
func TestPprofLoopbackOnly(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{":6060", "0.0.0.0:0", "[::]:0", "192.0.2.1:6060", "probed.example:6060"} {
		out, err := exec.CommandContext(probetest.Context(t), probedBin, "--listen=127.0.0.1:0", "--metrics-addr=", "--pprof-addr="+addr).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "refusing to serve the profiler on "+addr+", which is not a loopback address") || !strings.Contains(string(out), "--pprof-allow-non-loopback") {
			t.Errorf("--pprof-addr=%s: %v\n%s", addr, err, out)
		}
	}
}

// TestPprofDurations asks the profiler for profiles and traces longer
// than its cap of 60 s, which would hold it (it takes one CPU profile or
// trace at a time): each is refused at once with 400. Short ones are
// served.
func TestPprofDurations(t *testing.T) {
	t.Parallel()
	addr := probetest.FreePort(t)
	probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--pprof-addr="+addr))
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/debug/pprof/profile?seconds=100000", http.StatusBadRequest},
		{"/debug/pprof/profile?seconds=Inf", http.StatusBadRequest},
		{"/debug/pprof/trace?seconds=61", http.StatusBadRequest},
		{"/debug/pprof/heap?seconds=3600", http.StatusBadRequest},
		{"/debug/pprof/goroutine?seconds=61", http.StatusBadRequest},
		{"/debug/pprof/trace?seconds=0.1", http.StatusOK},
		{"/debug/pprof/heap?seconds=1", http.StatusOK},
	} {
		code, body := httpGet(t, "http://"+addr+tc.path)
		if code != tc.code || (code == http.StatusBadRequest && !strings.Contains(body, "60 seconds at most")) {
			t.Errorf("%s: %d %.200q, want %d", tc.path, code, body, tc.code)
		}
	}
}
