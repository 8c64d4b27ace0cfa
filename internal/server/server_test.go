package server_test

import (
	"context"
	"net"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestAbandonedFetchDuration leaves a Fetch part way through its reply:
// its audit and its total phase carry how long it ran, not how long it
// took to connect.
func TestAbandonedFetchDuration(t *testing.T) {
	t.Parallel()
	const delay = 200 * time.Millisecond
	srv := probetest.Start(t)
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		time.Sleep(delay)
		c.Write([]byte("late\n"))
		probetest.WaitClosed(c)
	})
	ctx, cancel := context.WithCancel(probetest.Context(t))
	defer cancel()
	f, err := client.New(srv.Conn).Fetch(ctx, "tcp", tg.Addr(), client.FetchOptions{KeepWriteOpen: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Next(); err != nil {
		t.Fatal(err)
	}
	cancel()
	f.Close()

	// The probe is observed as the handler ends, after the client has
	// seen its end, its count and its phases one after the other: wait
	// for both.
	var total *dto.Histogram
	probetest.Eventually(t, func() bool {
		families := scrape(t, srv)
		n, _ := metricValue(families["netprobe_probes_total"], map[string]string{"method": "Fetch", "outcome": "abandoned"})
		for _, m := range families["netprobe_probe_phase_seconds"].GetMetric() {
			if l := labels(m.GetLabel()); l["method"] == "Fetch" && l["phase"] == "total" {
				total = m.GetHistogram()
			}
		}
		return n == 1 && total != nil
	}, func() string { return "the Fetch was never counted abandoned with its total phase" })
	if sum := total.GetSampleSum(); sum < delay.Seconds() {
		t.Errorf("total phase %.3fs, want at least the %v the Fetch ran", sum, delay)
	}
}

func labels(pairs []*dto.LabelPair) map[string]string {
	out := map[string]string{}
	for _, p := range pairs {
		out[p.GetName()] = p.GetValue()
	}
	return out
}
