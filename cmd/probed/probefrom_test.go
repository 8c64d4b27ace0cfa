package main

import (
	"crypto/x509"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/netprobe/netprobe/internal/probetest"
)

// scrapeFrom scrapes /probe at addr with from=, as Prometheus does (a 5 s
// scrape timeout): its status, body, and the metrics of a 200.
func scrapeFrom(t *testing.T, addr, module, target, from string) (int, string, map[string]*dto.MetricFamily) {
	t.Helper()
	code, body := httpDo(t, "http://"+addr+"/probe?"+url.Values{"module": {module}, "target": {target}, "from": {from}}.Encode(),
		http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {"5"}})
	if code != http.StatusOK {
		return code, body, nil
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s: %v\n%s", addr, err, body)
	}
	return code, body, families
}

// TestProbeFrom scrapes /probe with from= on one node of a fleet of three,
// found through DNS: each node's metrics come labelled with its vantage,
// with the counts of nodes asked, succeeded and failed, and probe_success
// 1 only when every node succeeded; a target no node can take fails as
// one probe does; a selector that cannot be, a module a Sweep cannot
// carry, a server without peers are 400; a node down is counted failed,
// has no probe_success and says why.
func TestProbeFrom(t *testing.T) {
	t.Parallel()
	nodes := startFleet(t, 3, 40, func(i int) []string {
		return []string{fmt.Sprintf("--label=zone=z%d", i%2), fmt.Sprintf("--metrics-addr=127.0.0.%d:0", 40+i), "--modules-file=" + writeFile(t, "modules.yml", `modules:
  tcp_connect:
    prober: tcp
  banner:
    prober: tcp
    tcp:
      query_response:
      - expect: "^HELLO"
  udp:
    prober: udp
  extract:
    prober: tcp
    tcp:
      query_response:
      - expect: "^HELLO (.+)"
        labels:
        - name: who
          value: "${1}"
  icmp:
    prober: icmp
    icmp:
      ttl: 5
  icmp_sourced:
    prober: icmp
    icmp:
      source_ip_address: 127.0.0.1
  traced:
    prober: tcp
    netprobe:
      trace:
        when: always
`), "--allow-source=127.0.0.1"}
	})
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	hello := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("HELLO probe\r\n"))
		c.Close()
	})
	bye := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("BYE\r\n"))
		c.Close()
	})
	closed := fmt.Sprintf("127.0.0.1:%d", probetest.ClosedPort(t, "tcp", "127.0.0.1:0"))
	entry := nodes[0].MetricsAddr

	for _, tc := range []struct {
		name, module, target, from string
		// want are the series of these metrics, exactly.
		want map[string]map[string]float64
	}{
		// Each node traces its own probe: on loopback, one hop, the
		// target's SYN-ACK.
		{"a trace from each node", "traced", live.Addr(), "node=n1,n2", map[string]map[string]float64{
			"probe_success":                      {`{}`: 1, `{vantage="n1"}`: 1, `{vantage="n2"}`: 1},
			"probe_traceroute_reached":           {`{vantage="n1"}`: 1, `{vantage="n2"}`: 1},
			"probe_traceroute_total_hops":        {`{vantage="n1"}`: 1, `{vantage="n2"}`: 1},
			"probe_traceroute_last_answered_hop": {`{vantage="n1"}`: 1, `{vantage="n2"}`: 1},
		}},
		{"all", "tcp_connect", live.Addr(), "all", map[string]map[string]float64{
			"probe_success":                  {`{}`: 1, `{vantage="n1"}`: 1, `{vantage="n2"}`: 1, `{vantage="n3"}`: 1},
			"probe_fanout_nodes_asked":       {`{}`: 3},
			"probe_fanout_nodes_succeeded":   {`{}`: 3},
			"probe_fanout_nodes_failed":      {`{}`: 0},
			"probe_ip_protocol":              {`{vantage="n1"}`: 4, `{vantage="n2"}`: 4, `{vantage="n3"}`: 4},
			"probe_failure_info":             nil,
			"probe_fanout_node_failure_info": nil,
		}},
		{"by zone, a dialogue", "banner", hello.Addr(), "zone=z1", map[string]map[string]float64{
			"probe_success":                {`{}`: 1, `{vantage="n1"}`: 1, `{vantage="n3"}`: 1},
			"probe_failed_due_to_regex":    {`{vantage="n1"}`: 0, `{vantage="n3"}`: 0},
			"probe_fanout_nodes_asked":     {`{}`: 2},
			"probe_fanout_nodes_succeeded": {`{}`: 2},
		}},
		{"a dialogue that does not match", "banner", bye.Addr(), "node=n2", map[string]map[string]float64{
			"probe_success":                {`{}`: 0, `{vantage="n2"}`: 0},
			"probe_failed_due_to_regex":    {`{vantage="n2"}`: 1},
			"probe_failure_info":           {`{errno="",reason="REASON_NO_MATCH",stage="STAGE_EXPECT",vantage="n2"}`: 1},
			"probe_fanout_nodes_asked":     {`{}`: 1},
			"probe_fanout_nodes_succeeded": {`{}`: 0},
		}},
		// The probe has the time its node has: the scrape's, less the
		// margins for the results to come back in time.
		{"a silent peer", "banner", live.Addr(), "node=n1", map[string]map[string]float64{
			"probe_success":             {`{}`: 0, `{vantage="n1"}`: 0},
			"probe_failed_due_to_regex": {`{vantage="n1"}`: 0},
			"probe_failure_info":        {`{errno="",reason="REASON_TIMEOUT",stage="STAGE_EXPECT",vantage="n1"}`: 1},
		}},
		{"refused, by name", "tcp_connect", closed, "node=n2,n3", map[string]map[string]float64{
			"probe_success":                {`{}`: 0, `{vantage="n2"}`: 0, `{vantage="n3"}`: 0},
			"probe_failure_info":           {`{errno="ECONNREFUSED",reason="REASON_REFUSED",stage="STAGE_CONNECT",vantage="n2"}`: 1, `{errno="ECONNREFUSED",reason="REASON_REFUSED",stage="STAGE_CONNECT",vantage="n3"}`: 1},
			"probe_fanout_nodes_asked":     {`{}`: 2},
			"probe_fanout_nodes_succeeded": {`{}`: 0},
			"probe_fanout_nodes_failed":    {`{}`: 0},
		}},
		// A target no node can take fails here, as one probe does, and no
		// node is asked.
		{"not HOST:PORT", "tcp_connect", "127.0.0.1", "all", map[string]map[string]float64{
			"probe_success":                {`{}`: 0},
			"probe_failure_info":           {`{errno="",reason="REASON_UNKNOWN_SERVICE",stage="STAGE_SERVICE_LOOKUP"}`: 1},
			"probe_fanout_nodes_asked":     {`{}`: 0},
			"probe_fanout_nodes_succeeded": {`{}`: 0},
		}},
		// An icmp module's echo goes from each node, with its options.
		{"an echo", "icmp", "127.0.0.1", "node=n1,n3", map[string]map[string]float64{
			"probe_success":                {`{}`: 1, `{vantage="n1"}`: 1, `{vantage="n3"}`: 1},
			"probe_icmp_reply_hop_limit":   {`{vantage="n1"}`: 64, `{vantage="n3"}`: 64},
			"probe_ip_protocol":            {`{vantage="n1"}`: 4, `{vantage="n3"}`: 4},
			"probe_fanout_nodes_asked":     {`{}`: 2},
			"probe_fanout_nodes_succeeded": {`{}`: 2},
			"probe_failure_info":           nil,
		}},
		{"an echo of HOST:PORT", "icmp", "127.0.0.1:80", "all", map[string]map[string]float64{
			"probe_success":            {`{}`: 0},
			"probe_failure_info":       {`{errno="",reason="REASON_NO_SUCH_HOST",stage="STAGE_RESOLVE"}`: 1},
			"probe_fanout_nodes_asked": {`{}`: 0},
		}},
		{"a host that is not one", "tcp_connect", "bad host:80", "all", map[string]map[string]float64{
			"probe_success":            {`{}`: 0},
			"probe_failure_info":       {`{errno="",reason="REASON_NO_SUCH_HOST",stage="STAGE_RESOLVE"}`: 1},
			"probe_fanout_nodes_asked": {`{}`: 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.module == "icmp" {
				probetest.RequireEcho(t)
			}
			start := time.Now()
			code, body, got := scrapeFrom(t, entry, tc.module, tc.target, tc.from)
			if code != http.StatusOK {
				t.Fatalf("%d %s", code, body)
			}
			// The answer comes within the scrape's timeout, whatever the
			// target does.
			if took := time.Since(start); took >= 5*time.Second {
				t.Errorf("answered in %v, past the scrape's timeout of 5s", took)
			}
			for name, want := range tc.want {
				if s := seriesOf(got[name]); !maps.Equal(s, want) && (len(s) > 0 || len(want) > 0) {
					t.Errorf("%s: %v, want %v", name, s, want)
				}
			}
		})
	}

	t.Run("a limit", func(t *testing.T) {
		code, body := httpDo(t, "http://"+entry+"/probe?"+url.Values{"module": {"tcp_connect"}, "target": {live.Addr()}, "from": {"all"}, "limit": {"1"}}.Encode(), nil)
		if code != http.StatusOK {
			t.Fatalf("%d %s", code, body)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		got, err := parser.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]map[string]float64{
			"probe_success":              {`{}`: 1, `{vantage="n1"}`: 1},
			"probe_fanout_nodes_asked":   {`{}`: 1},
			"probe_fanout_nodes_skipped": {`{}`: 2},
		} {
			if s := seriesOf(got[name]); !maps.Equal(s, want) {
				t.Errorf("%s: %v, want %v (the entry first, the other two skipped)", name, s, want)
			}
		}
		for _, limit := range []string{"0", "-1", "many", "99999999999"} {
			code, body := httpDo(t, "http://"+entry+"/probe?"+url.Values{"module": {"tcp_connect"}, "target": {live.Addr()}, "from": {"all"}, "limit": {limit}}.Encode(), nil)
			if want := fmt.Sprintf("limit %q: want the most nodes to ask, 1 or more", limit); code != http.StatusBadRequest || !strings.HasPrefix(body, want) {
				t.Errorf("limit=%s: %d %q, want 400 %q", limit, code, body, want)
			}
		}
	})

	lone := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0"))
	for _, tc := range []struct {
		name, addr, module, from string
		debug                    bool
		want                     string
	}{
		{"an empty selector", entry, "tcp_connect", "", false, `from: vantages "": "" is not all, node=NAME[,NAME...] or KEY=VALUE`},
		{"a selector that is not one", entry, "tcp_connect", "zone", false, `from: vantages "zone": "zone" is not all, node=NAME[,NAME...] or KEY=VALUE`},
		{"a label twice", entry, "tcp_connect", "zone=z1,zone=z0", false, `from: vantages "zone=z1,zone=z0": label zone given twice`},
		{"an oversized selector", entry, "tcp_connect", "node=" + strings.Repeat("n", 4092), false, "from: 4097 bytes, over the most a selector may have, 4096"},
		{"no node matches", entry, "tcp_connect", "zone=mars", false, "vantages: no node matches zone=mars"},
		{"no such node", entry, "tcp_connect", "node=n9", false, "vantages: no node matches nodes n9"},
		{"a udp module", entry, "udp", "all", false, `Module "udp" cannot run from a fleet's nodes (from=): a Sweep entry sends no datagram`},
		{"a module with expect labels", entry, "extract", "all", false, `Module "extract" cannot run from a fleet's nodes (from=): a Sweep's dialogue reports no matches`},
		{"an echo from this node's address", entry, "icmp_sourced", "all", false, `Module "icmp_sourced" cannot run from a fleet's nodes (from=): its source_ip_address is an address of this node`},
		{"debug", entry, "tcp_connect", "all", true, "debug=true shows one probe's dialogue"},
		{"a server without peers", lone.MetricsAddr, "tcp_connect", "all", false, "vantages: this server has no peers (probed --peers), so it cannot fan a sweep out"},
		{"all with a name", entry, "tcp_connect", "all,node=n2", false, "vantages.all: all selects every node, and goes alone"},
		{"a name no node could have", entry, "tcp_connect", "node=né", false, `vantages.nodes[0]: "né": only letters, digits and - _ . /`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{"module": {tc.module}, "target": {live.Addr()}, "from": {tc.from}}
			if tc.debug {
				q.Set("debug", "true")
			}
			code, body := httpDo(t, "http://"+tc.addr+"/probe?"+q.Encode(), nil)
			if code != http.StatusBadRequest || !strings.HasPrefix(body, tc.want) {
				t.Errorf("%d %q, want 400 %q", code, body, tc.want)
			}
		})
	}

	// Last: it stops a node.
	t.Run("a node down", func(t *testing.T) {
		nodes[2].Stop()
		code, body, got := scrapeFrom(t, entry, "tcp_connect", live.Addr(), "all")
		if code != http.StatusOK {
			t.Fatalf("%d %s", code, body)
		}
		for name, want := range map[string]map[string]float64{
			"probe_success":                  {`{}`: 0, `{vantage="n1"}`: 1, `{vantage="n2"}`: 1},
			"probe_fanout_nodes_asked":       {`{}`: 3},
			"probe_fanout_nodes_succeeded":   {`{}`: 2},
			"probe_fanout_nodes_failed":      {`{}`: 1},
			"probe_fanout_node_failure_info": {`{code="UNAVAILABLE",vantage="n3"}`: 1},
		} {
			if s := seriesOf(got[name]); !maps.Equal(s, want) {
				t.Errorf("%s: %v, want %v", name, s, want)
			}
		}
	})
}

// TestProbeFromPrometheus points a real Prometheus at /probe with from=all
// on one node of a fleet of three, and evaluates the quorum alert
// docs/prometheus.md gives: quiet while every node reaches the target,
// firing for a quorum of 3 once a node is down, and quiet for a quorum of
// 2.
func TestProbeFromPrometheus(t *testing.T) {
	prometheus := probetest.Program(t, "prometheus", "apt-get install prometheus (Debian's package)")
	nodes := startFleet(t, 3, 50, func(i int) []string { return []string{fmt.Sprintf("--metrics-addr=127.0.0.%d:0", 50+i)} })
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	dir := t.TempDir()
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: fleet
    metrics_path: /probe
    params:
      module: [tcp_connect]
      from: [all]
    static_configs:
      - targets: ['%s']
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: %s
`, live.Addr(), nodes[0].MetricsAddr)
	web := startPrometheus(t, prometheus, dir, config)
	for _, tc := range []struct {
		query string
		want  float64
	}{
		{`count(probe_success{job="fleet",vantage!=""} == 1)`, 3},
		{`probe_success{job="fleet",vantage=""}`, 1},
		{`probe_fanout_nodes_succeeded{job="fleet"} < 3`, 0},
	} {
		if got := waitQuery(t, web, tc.query); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.query, got, tc.want)
		}
	}
	nodes[2].Stop()
	// Prometheus has the scrapes after the stop once it sees the node
	// failed.
	waitValue := func(query string, want float64) {
		t.Helper()
		probetest.EventuallyWithin(t, 30*time.Second, func() bool {
			v, ok := instantQuery(t, web, strings.Replace(query, " < ", " < bool ", 1))
			return ok && v == want
		}, func() string { return fmt.Sprintf("%s never became %v", query, want) })
	}
	waitValue(`probe_fanout_nodes_failed{job="fleet"}`, 1)
	for _, tc := range []struct {
		query string
		want  float64
	}{
		{`probe_fanout_nodes_succeeded{job="fleet"} < 3`, 1},
		{`probe_fanout_nodes_succeeded{job="fleet"} < 2`, 0},
		{`probe_success{job="fleet",vantage=""}`, 0},
		{`probe_fanout_node_failure_info{job="fleet",vantage="n3",code="UNAVAILABLE"}`, 1},
	} {
		if got := waitQuery(t, web, tc.query); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.query, got, tc.want)
		}
	}
}

// TestProbeFromTrust scrapes /probe with from=all on a fleet whose nodes
// require tokens and talk to each other over TLS with a peer token: the
// scrape needs the scraper's token, as any does, and runs on each node as
// the scraper's, under its policy there (n3 does not allow alice the
// target: its probe fails at STAGE_POLICY, the others' succeed).
func TestProbeFromTrust(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := probetest.NewCA(t)
	caFile := ca.WriteFile(t, dir)
	const nodeToken = "node-0123456789abcdef"
	tokens := writeFile(t, "tokens", "alice "+aliceToken+"\nnode "+nodeToken+"\n")
	peerToken := writeFile(t, "peer-token", nodeToken+"\n")
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	nodes := startFleet(t, 3, 60, func(i int) []string {
		certFile, keyFile := probetest.WriteFiles(t, t.TempDir(), ca.Issue(t, fmt.Sprintf("n%d", i), true, func(c *x509.Certificate) {
			c.IPAddresses = append(c.IPAddresses, net.IPv4(127, 0, 0, byte(60+i)))
		}))
		rules := "caller alice allow 127.0.0.1\n"
		if i == 3 {
			rules = "caller alice allow 127.0.0.99\n"
		}
		return []string{"--tls-cert=" + certFile, "--tls-key=" + keyFile, "--tokens-file=" + tokens, "--peer=node",
			"--peer-token-file=" + peerToken, "--peer-ca-file=" + caFile, "--policy-file=" + writeFile(t, "policy", rules),
			fmt.Sprintf("--metrics-addr=127.0.0.%d:0", 60+i)}
	})
	u := "http://" + nodes[0].MetricsAddr + "/probe?" + url.Values{"module": {"tcp_connect"}, "target": {live.Addr()}, "from": {"all"}}.Encode()
	if code, body := httpDo(t, u, nil); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d %q, want 401", code, body)
	}
	got := scrape(t, u)
	for name, want := range map[string]map[string]float64{
		"probe_success":                {`{}`: 0, `{vantage="n1"}`: 1, `{vantage="n2"}`: 1, `{vantage="n3"}`: 0},
		"probe_failure_info":           {`{errno="",reason="REASON_DENIED",stage="STAGE_POLICY",vantage="n3"}`: 1},
		"probe_fanout_nodes_succeeded": {`{}`: 2},
		"probe_fanout_nodes_failed":    {`{}`: 0},
	} {
		if s := seriesOf(got[name]); !maps.Equal(s, want) {
			t.Errorf("%s: %v, want %v", name, s, want)
		}
	}
}
