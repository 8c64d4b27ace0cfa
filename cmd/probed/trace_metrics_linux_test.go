package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
)

// traceModules are /probe's modules with a trace: on failure (the probe
// has 1s of its own, the trace the rest of the scrape's up to 8s, enough
// for five silent TTLs after a drop), and always.
const traceModules = `modules:
  traced:
    prober: tcp
    timeout: 1s
    tcp:
      preferred_ip_protocol: ip4
    netprobe:
      trace:
        max_hops: 10
        timeout: 8s
  traced_always:
    prober: tcp
    tcp:
      preferred_ip_protocol: ip4
    netprobe:
      trace:
        when: always
        timeout: 3s
`

// TestTraceMetrics scrapes /probe of modules with netprobe.trace, from a
// probed that runs as uid 65532 with no capability in the client's
// namespace of the chain client - r1 - r2 - r3 - target: a target whose
// SYNs r2 drops fails (probe_success 0) with the path to r1 and the
// silent TTLs after it; one r2 rejects, with r2's unreachable; a target
// reached, with module when=always, has the whole path, and its route
// hash (Grafana's: FNV-1 of the hops' addresses) is the same at each
// scrape and differs from the rejected path's. debug=true shows the path,
// and the page's failing targets say where each stopped.
func TestTraceMetrics(t *testing.T) {
	c := netlab.NewChain(t, 3)
	target := c.Target.V4
	for _, p := range []uint16{tracePortOpen, tracePortDropped, tracePortRejected} {
		probetest.NewTarget(t, c.Target.Listen(t, netip.AddrPortFrom(target, p).String()), func(conn net.Conn) { conn.Close() })
	}
	c.Filter(t, 2, tracePortDropped, netlab.Drop)
	c.Filter(t, 2, tracePortRejected, netlab.Reject)
	// The unprivileged probed reads the file.
	dir, err := os.MkdirTemp("", "netprobe-trace-modules")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	file := filepath.Join(dir, "modules.yml")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(traceModules), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startUnprivileged(t, c.Client, "--metrics-addr=127.0.0.1:0", "--modules-file="+file)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
		err = c.Client.Do(func() error {
			conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}}}
	t.Cleanup(client.CloseIdleConnections)
	get := func(t *testing.T, path string) string {
		t.Helper()
		req, err := http.NewRequestWithContext(probetest.Context(t), "GET", "http://"+p.MetricsAddr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Prometheus's default scrape timeout: 9.5s for the probe and its
		// trace, after the offset.
		req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "10")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v\n%s", path, resp.StatusCode, err, b)
		}
		return string(b)
	}
	// probe scrapes module's probe of port, as name=value lines of the
	// traceroute metrics and probe_success, labels sorted by name.
	probe := func(t *testing.T, module string, port int) []string {
		t.Helper()
		body := get(t, fmt.Sprintf("/probe?module=%s&target=%s", module, netip.AddrPortFrom(target, uint16(port))))
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("parse: %v\n%s", err, body)
		}
		var out []string
		for _, name := range []string{"probe_success", "probe_traceroute_total_hops", "probe_traceroute_packet_loss_percent",
			"probe_traceroute_route_hash", "probe_traceroute_last_answered_hop", "probe_traceroute_reached", "probe_traceroute_hop_info"} {
			out = append(out, series(families[name])...)
		}
		return out
	}
	routeHash := func(addrs ...netip.Addr) string {
		h := fnv.New32()
		for _, a := range addrs {
			h.Write([]byte(a.String()))
		}
		return fmt.Sprint(h.Sum32())
	}
	r := func(n int) netip.Addr { return c.Routers[n-1].V4 }
	hop := func(ttl int, addr, answer string) string {
		return fmt.Sprintf("probe_traceroute_hop_info{address=%q,answer=%q,ttl=\"%d\"} 1", addr, answer, ttl)
	}
	check := func(t *testing.T, got, want []string) {
		t.Helper()
		// The registry orders a family's series by their labels.
		slices.Sort(got)
		slices.Sort(want)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("metrics:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}

	// stops runs the rows of chainStops: each scrape's probe_success and
	// where its path stopped, as debug=true says it, the hops' addresses
	// named.
	names := strings.NewReplacer(r(1).String()+" (", "r1 (", r(2).String()+" (", "r2 (", r(3).String()+" (", "r3 (", target.String()+" (", "target (")
	stops := func(t *testing.T, last bool) {
		for _, row := range chainStops {
			if row.last != last {
				continue
			}
			t.Run(row.name, func(t *testing.T) {
				t.Parallel()
				debug := get(t, fmt.Sprintf("/probe?module=%s&target=%s&debug=true", row.module, netip.AddrPortFrom(target, uint16(row.port))))
				if want := fmt.Sprintf("\nprobe_success %d\n", row.success); !strings.Contains(debug, want) {
					t.Errorf("debug=true lacks %q:\n%s", want, debug)
				}
				_, stopped, _ := strings.Cut(debug, "\n  stopped after ")
				stopped, _, _ = strings.Cut(stopped, "\n")
				if got := names.Replace(stopped); got != row.stopped {
					t.Errorf("stopped after %q, want %q:\n%s", got, row.stopped, debug)
				}
			})
		}
	}

	t.Run("scrapes", func(t *testing.T) {
		t.Run("where it stopped", func(t *testing.T) { stops(t, false) })
		t.Run("dropped at r2, on failure", func(t *testing.T) {
			t.Parallel()
			// r1 answers; five silent TTLs after it end the trace.
			want := []string{"probe_success 0", "probe_traceroute_total_hops 6", "probe_traceroute_packet_loss_percent 0.8333333333333334",
				"probe_traceroute_route_hash " + routeHash(r(1)), "probe_traceroute_last_answered_hop 1", "probe_traceroute_reached 0",
				hop(1, r(1).String(), "HOP_ANSWER_TIME_EXCEEDED")}
			for ttl := 2; ttl <= 6; ttl++ {
				want = append(want, hop(ttl, "", "HOP_ANSWER_NONE"))
			}
			check(t, probe(t, "traced", tracePortDropped), want)
		})
		t.Run("rejected at r2, on failure", func(t *testing.T) {
			t.Parallel()
			check(t, probe(t, "traced", tracePortRejected), []string{"probe_success 0", "probe_traceroute_total_hops 2", "probe_traceroute_packet_loss_percent 0",
				"probe_traceroute_route_hash " + routeHash(r(1), r(2)), "probe_traceroute_last_answered_hop 2", "probe_traceroute_reached 0",
				hop(1, r(1).String(), "HOP_ANSWER_TIME_EXCEEDED"), hop(2, r(2).String(), "HOP_ANSWER_UNREACHABLE")})
			debug := get(t, fmt.Sprintf("/probe?module=traced&target=%s&debug=true", netip.AddrPortFrom(target, tracePortRejected)))
			for _, want := range []string{
				fmt.Sprintf("Path to %s:%d from ", target, tracePortRejected),
				fmt.Sprintf("stopped after %s (hop 2), which answered unreachable (ICMP type 3, code 13)", r(2)),
				fmt.Sprintf("hop 1 %s HOP_ANSWER_TIME_EXCEEDED (ICMP type 11, code 0), 1 of 1 answered", r(1)),
				"the trace (netprobe.trace, timeout 8s) has 8s and the probe 1s",
			} {
				if !strings.Contains(debug, want) {
					t.Errorf("debug=true lacks %q:\n%s", want, debug)
				}
			}
		})
		t.Run("reached, always", func(t *testing.T) {
			t.Parallel()
			want := []string{"probe_success 1", "probe_traceroute_total_hops 4", "probe_traceroute_packet_loss_percent 0",
				"probe_traceroute_route_hash " + routeHash(r(1), r(2), r(3), target), "probe_traceroute_last_answered_hop 4", "probe_traceroute_reached 1",
				hop(1, r(1).String(), "HOP_ANSWER_TIME_EXCEEDED"), hop(2, r(2).String(), "HOP_ANSWER_TIME_EXCEEDED"),
				hop(3, r(3).String(), "HOP_ANSWER_TIME_EXCEEDED"), hop(4, target.String(), "HOP_ANSWER_SYN_ACK")}
			// The same path at each scrape: the same hash.
			for range 2 {
				check(t, probe(t, "traced_always", tracePortOpen), want)
			}
		})
	})
	// The page's failing targets say where each path stopped.
	page := get(t, "/")
	for _, want := range []string{
		fmt.Sprintf("path stopped after %s (hop 1); nothing beyond it", r(1)),
		fmt.Sprintf("path stopped after %s (hop 2), which answered unreachable (ICMP type 3, code 13)", r(2)),
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	// Last, as it breaks the chain for every port.
	t.Run("no route at r1", func(t *testing.T) {
		c.NoRoute(t, 1)
		stops(t, true)
	})
}

// chainStop is a row of docs/fault-matrix.md's table of where a path
// stopped: a fault made in the chain client - r1 - r2 - r3 - target, and
// what a scrape of a module with netprobe.trace says of it.
type chainStop struct {
	name, condition string
	module          string
	port            int
	// last says the fault breaks the chain for every port: its row runs
	// after the others.
	last    bool
	success int
	// stopped is where the path stopped (audit.StoppedAfter's words),
	// with the hops' addresses named r1, r2, r3 and target.
	stopped string
}

var chainStops = []chainStop{
	{name: "dropped at r2", condition: "r2 drops the SYNs (nft `drop`)", module: "traced", port: tracePortDropped,
		stopped: "r1 (hop 1); nothing beyond it"},
	{name: "rejected at r2", condition: "r2 rejects the SYNs with ICMP admin-prohibited", module: "traced", port: tracePortRejected,
		stopped: "r2 (hop 2), which answered unreachable (ICMP type 3, code 13)"},
	{name: "closed port", condition: "nothing listens on the target's port", module: "traced", port: tracePortClosed,
		stopped: "target (hop 4): the target answered RST"},
	{name: "reached", condition: "the target accepts (`when: always` traces a success too)", module: "traced_always", port: tracePortOpen, success: 1,
		stopped: "target (hop 4): the target answered SYN-ACK"},
	{name: "no route at r1", condition: "r1 has no route to the target", module: "traced", port: tracePortOpen, last: true,
		stopped: "r1 (hop 1), which answered unreachable (ICMP type 3, code 0)"},
}

// docs/fault-matrix.md's table of where paths stopped stands between
// these lines.
const (
	stopsBegin = "<!-- where it stopped: made from cmd/probed/trace_metrics_linux_test.go by `go test ./cmd/probed -run TestChainStopsTable -update` -->\n"
	stopsEnd   = "<!-- end of where it stopped -->\n"
)

// TestChainStopsTable checks that docs/fault-matrix.md's table of where
// paths stopped is chainStops, which TestTraceMetrics runs.
func TestChainStopsTable(t *testing.T) {
	const doc = "../../docs/fault-matrix.md"
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	before, rest, ok1 := strings.Cut(string(b), stopsBegin)
	old, after, ok2 := strings.Cut(rest, stopsEnd)
	if !ok1 || !ok2 {
		t.Fatalf("%s has no table between %q and %q", doc, stopsBegin, stopsEnd)
	}
	var want strings.Builder
	want.WriteString("| condition | probe_success | where it stopped |\n|---|---|---|\n")
	for _, r := range chainStops {
		fmt.Fprintf(&want, "| %s | %d | %s |\n", r.condition, r.success, r.stopped)
	}
	switch {
	case old == want.String():
	case *update:
		if err := os.WriteFile(doc, []byte(before+stopsBegin+want.String()+stopsEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
	default:
		t.Errorf("docs/fault-matrix.md's table of where paths stopped differs from the tests'; run go test ./cmd/probed -run TestChainStopsTable -update\ndocs:\n%s\ntests:\n%s", old, want.String())
	}
}

// series is each series of f as "name{label="value",...} value", labels
// sorted by name as the parser gives them.
func series(f *dto.MetricFamily) []string {
	var out []string
	for _, m := range f.GetMetric() {
		var labels []string
		for _, l := range m.GetLabel() {
			labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
		}
		name := f.GetName()
		if len(labels) > 0 {
			name += "{" + strings.Join(labels, ",") + "}"
		}
		out = append(out, name+" "+strconv.FormatFloat(m.GetGauge().GetValue(), 'f', -1, 64))
	}
	return out
}
