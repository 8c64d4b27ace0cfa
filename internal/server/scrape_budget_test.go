package server_test

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// TestScrapeExpectBudget plays a scraper of a module whose expect costs
// hundreds of steps a byte, against a target that sends 4 KiB and
// closes, on a server with the least budget of matching: the scraper is
// a caller like any other, its expect held to its budget, so the probe
// ends at its timeout (REASON_TIMEOUT, counted as a refusal of
// match_steps_per_caller) where without the budget it would match the
// 4 KiB at once and find no match.
func TestScrapeExpectBudget(t *testing.T) {
	t.Parallel()
	path := writeModules(t, t.TempDir(), "modules:\n  costly:\n    prober: tcp\n    timeout: 1s\n    tcp:\n      query_response:\n      - expect: \"\\\\pL{330}z\"\n")
	srv := probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.Exporter.ModulesFile, c.Admission.ExpectRate = path, admission.MinExpectRate }))
	sender := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte(strings.Repeat("b", 4<<10)))
		c.Close()
	})
	code, body := newScraper(t, srv).get(t, url.Values{"module": {"costly"}, "target": {sender.Addr()}}, http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {"2"}})
	if code != http.StatusOK {
		t.Fatalf("scrape: %d %s", code, body)
	}
	for _, want := range []string{"probe_success 0", `probe_failure_info{errno="",reason="REASON_TIMEOUT",stage="STAGE_EXPECT"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("the scrape lacks %q:\n%s", want, body)
		}
	}
	if n, _ := metricValue(scrape(t, srv)["netprobe_limit_refusals_total"], map[string]string{"limit": "match_steps_per_caller"}); n < 1 {
		t.Errorf("netprobe_limit_refusals_total{limit=match_steps_per_caller} = %v, want the scrape's expect counted", n)
	}
}
