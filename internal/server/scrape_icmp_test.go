package server_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// TestScrapeICMP scrapes an icmp module: an echo of loopback, one of an
// address the policy denies (probe_success 0 at STAGE_POLICY, with the
// address metrics of what the name resolved to, as any denied target
// has), and debug=true's page, which shows the echo and its reply, and
// the module's icmp options as netprobe runs them.
func TestScrapeICMP(t *testing.T) {
	t.Parallel()
	probetest.RequireEcho(t)
	path := writeModules(t, t.TempDir(), "modules:\n  ping:\n    prober: icmp\n    icmp:\n      preferred_ip_protocol: ip4\n      payload_size: 100\n      ttl: 9\n")
	srv := probetest.Start(t, probetest.WithPolicy("deny 127.0.0.2"), probetest.WithConfig(func(c *server.Config) { c.Exporter.ModulesFile = path }))
	s := newScraper(t, srv)

	for _, tc := range []struct {
		name, target  string
		success, hash float64
		failure       map[string]string
	}{
		{"answered", "127.0.0.1", 1, 3668918509, nil},
		{"denied", "127.0.0.2", 0, 3618585652, map[string]string{"stage": "STAGE_POLICY", "reason": "REASON_DENIED"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			families := s.probe(t, "ping", tc.target)
			for name, want := range map[string]float64{"probe_success": tc.success, "probe_ip_protocol": 4, "probe_ip_addr_hash": tc.hash} {
				if v, ok := metricValue(families[name], nil); !ok || v != want {
					t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
				}
			}
			if v, ok := metricValue(families["probe_failure_info"], tc.failure); (tc.failure != nil) != ok || (ok && v != 1) {
				t.Errorf("probe_failure_info = %v (present %v), want %v", v, ok, tc.failure)
			}
			if _, ok := metricValue(families["probe_icmp_reply_hop_limit"], nil); ok != (tc.success == 1) {
				t.Errorf("probe_icmp_reply_hop_limit present %v, with probe_success %v", ok, tc.success)
			}
			for _, phase := range []string{"resolve", "setup", "rtt"} {
				if _, ok := metricValue(families["probe_icmp_duration_seconds"], map[string]string{"phase": phase}); !ok {
					t.Errorf("probe_icmp_duration_seconds{phase=%q} is missing", phase)
				}
			}
			// A connection's metrics are not an echo's.
			for _, name := range []string{"probe_phase_duration_seconds", "probe_attempts", "probe_failed_due_to_regex"} {
				if families[name] != nil {
					t.Errorf("%s is given for an echo", name)
				}
			}
		})
	}
	code, body := s.get(t, url.Values{"module": {"ping"}, "target": {"127.0.0.1"}, "debug": {"true"}}, nil)
	for _, want := range []string{
		"  echo of 100 bytes (id ", ") to 127.0.0.1 from 127.0.0.1, on a ", " ICMP socket\n", "  reply from 127.0.0.1 after ",
		"name: ping\nprober: icmp\nip_family: IP_FAMILY_PREFER_IPV4\nicmp:\n  dont_fragment: false\n  payload_bytes: 100\n  ttl: 9\n",
	} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("debug: %d, no %q in\n%s", code, want, body)
		}
	}
	if _, page := s.page(t); !strings.Contains(page, "an ICMP echo of 100 bytes, TTL 9") {
		t.Errorf("the page does not say what the module does:\n%s", page)
	}
}
