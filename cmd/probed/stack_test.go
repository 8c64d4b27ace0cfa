package main

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"os/exec"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestHeldProbeStacks holds Connect probes and idle Fetch streams open in
// the real binary and checks that each costs one goroutine stack of 8 KiB,
// not 16: a probe waiting on the network holds its whole stack, and a
// frame or an interceptor too many takes it past 8 KiB, where the runtime
// doubles it (issue #6's 10k-in-flight memory target rests on this).
func TestHeldProbeStacks(t *testing.T) {
	t.Parallel()
	const n = 500
	ctx := probetest.Context(t)
	port, release, err := probetest.Blackhole(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	silent := probetest.Listen(t, "127.0.0.1:0", nil)

	for _, tc := range []struct {
		name  string
		probe func(context.Context, *client.Client) error
	}{
		{"Connect", func(ctx context.Context, c *client.Client) error {
			_, err := c.Connect(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port), client.ConnectOptions{Timeout: time.Minute})
			return err
		}},
		{"idle Fetch", func(ctx context.Context, c *client.Client) error {
			f, err := c.Fetch(ctx, "tcp", silent.Addr(), client.FetchOptions{KeepWriteOpen: true, Timeout: time.Minute})
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Next()
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			heldStack(t, "held probes", func() float64 {
				// A probed of its own: stacks freed by goroutines that ended
				// stay counted as in use, ready for the next.
				p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0",
					"--max-in-flight=10000", "--max-in-flight-per-caller=10000", "--rate=1e6", "--burst=1000000",
					"--max-streams-per-connection=10000"))
				defer p.Stop()
				c, err := client.Dial(p.Addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Health(ctx); err != nil {
					t.Fatal(err)
				}
				before := scrape(t, "http://"+p.MetricsAddr+"/metrics")
				hctx, cancel := context.WithCancel(ctx)
				var wg sync.WaitGroup
				defer wg.Wait()
				defer cancel()
				for range n {
					wg.Go(func() {
						if err := tc.probe(hctx, c); err != nil && hctx.Err() == nil {
							t.Errorf("probe ended before it was cancelled: %v", err)
						}
					})
				}
				// The scrape that sees them all in flight is the one weighed.
				var after map[string]*dto.MetricFamily
				var inFlight float64
				probetest.Eventually(t, func() bool {
					after = scrape(t, "http://"+p.MetricsAddr+"/metrics")
					inFlight, _ = metricValue(after["netprobe_probes_in_flight"], nil)
					return inFlight == n
				}, func() string { return fmt.Sprintf("%v of %d probes in flight", inFlight, n) })
				held := map[string]float64{}
				for _, f := range []string{"go_memstats_stack_inuse_bytes", "go_goroutines"} {
					was, _ := metricValue(before[f], nil)
					now, _ := metricValue(after[f], nil)
					held[f] = now - was
				}
				perProbe := held["go_memstats_stack_inuse_bytes"] / n
				t.Logf("%d held: %.0f more goroutines, %.1f KiB more stack each", n, held["go_goroutines"], perProbe/1024)
				return perProbe
			})
		})
	}
}

// heldStack fails t unless measure, which holds probes in a probed of its
// own and returns the stack each took, finds them within 8 KiB a probe
// (plus what the server's own goroutines grew by; a doubled stack would
// show 16) in one of three runs. What else runs, the rest of the suite and
// the frames of preemption, only adds to a measure: under the whole suite
// and two busy CPUs, runs of the same code measured 8 and 11.4 KiB. So the
// least of them is the probes' own.
func heldStack(t *testing.T, what string, measure func() float64) {
	t.Helper()
	const limit = 11 << 10
	least := math.Inf(1)
	for range 3 {
		if least = min(least, measure()); least <= limit {
			return
		}
	}
	t.Errorf("%s cost %.1f KiB of stack each at the least of three runs, want 8 (a stack past 8 KiB is doubled)", what, least/1024)
}
