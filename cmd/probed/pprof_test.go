package main

import (
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
