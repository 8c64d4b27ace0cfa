package main

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestLogBatches probes through probed, whose log is batched: the audit
// lines come in fewer writes than lines, and every one of them is out by
// the time probed has exited on SIGTERM.
func TestLogBatches(t *testing.T) {
	t.Parallel()
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--burst=1000"))
	c := client.New(dial(t, p.Addr))
	tg := probetest.Listen(t, "127.0.0.1:0", nil)
	const probes = 200
	for range probes {
		if _, err := c.Connect(probetest.Context(t), "tcp", tg.Addr(), client.ConnectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	families := scrape(t, "http://"+p.MetricsAddr+"/metrics")
	lines, _ := metricValue(families["netprobe_log_lines_total"], nil)
	batches, _ := metricValue(families["netprobe_log_batches_total"], nil)
	if lines < probes || batches >= lines {
		t.Errorf("%v lines in %v batches, want at least %d lines in fewer batches", lines, batches, probes)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.Exited:
		if err != nil {
			t.Fatalf("probed exited: %v", err)
		}
	case <-time.After(probetest.Timeout):
		t.Fatal("probed did not exit")
	}
	if n := p.Logged("probe"); n != probes {
		t.Errorf("%d audit lines, want %d", n, probes)
	}
	// The last line, written just before exit, is out too.
	if p.Logged("stopped") != 1 {
		t.Errorf("%d \"stopped\" lines, want the last one", p.Logged("stopped"))
	}
}
