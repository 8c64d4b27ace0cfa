package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/netprobe/netprobe/internal/probemetrics"
	"github.com/netprobe/netprobe/internal/probetest"
)

// The generated table's markers in docs/prometheus.md.
const (
	additionsBegin = "<!-- netprobe's metrics: made from internal/probemetrics's Additions by `go test ./cmd/probed -run TestAdditionsTable -update` -->\n"
	additionsEnd   = "<!-- end of netprobe's metrics -->"
)

// TestAdditionsTable checks docs/prometheus.md's table of netprobe's own
// metrics against probemetrics.Additions, the list TestSeriesParity
// accepts beyond blackbox_exporter's series; -update makes it.
func TestAdditionsTable(t *testing.T) {
	const path = "../../docs/prometheus.md"
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before, rest, ok := strings.Cut(string(doc), additionsBegin)
	old, after, ok2 := strings.Cut(rest, additionsEnd)
	if !ok || !ok2 {
		t.Fatalf("docs/prometheus.md has no table of netprobe's metrics between %q and %q", additionsBegin, additionsEnd)
	}
	want := probemetrics.Markdown()
	if old == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(before+additionsBegin+want+additionsEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("docs/prometheus.md's table of netprobe's metrics differs from probemetrics.Additions; run go test ./cmd/probed -run TestAdditionsTable -update\ndocs:\n%s\nAdditions:\n%s", old, want)
}

// TestSeriesParity scrapes Debian's blackbox_exporter and probed side by
// side, with the same module file, for the same targets: TCP that
// connects (IPv4 and IPv6) and is refused, TLS with a test CA that
// verifies and a certificate that has expired, an SSH banner and a banner
// that is not one, a name that does not resolve, a target without a port,
// a port out of range and a host that is not one; and ICMP echoes
// (blackbox.yml's icmp and icmp_ttl5, and one of every option) of
// loopback in both families, of a name, and of targets that fail before
// any echo. Every series
// blackbox_exporter gives, probed gives, with its type, help, labels and
// value (but for times); every series probed gives beyond them is one of
// probemetrics.Additions, with its labels.
func TestSeriesParity(t *testing.T) {
	bbe := probetest.Program(t, "prometheus-blackbox-exporter", "apt-get install prometheus-blackbox-exporter (Debian's package)")
	dir := t.TempDir()
	ca := probetest.NewCA(t)
	caFile := ca.WriteFile(t, dir)
	modules := filepath.Join(dir, "blackbox.yml")
	if err := os.WriteFile(modules, []byte(`modules:
  tcp_connect:
    prober: tcp
  tls_connect:
    prober: tcp
    tcp:
      tls: true
      tls_config:
        ca_file: `+caFile+`
        server_name: localhost
  ssh_banner:
    prober: tcp
    tcp:
      query_response:
      - expect: "^SSH-2.0-"
      - send: "SSH-2.0-blackbox-ssh-check"
  icmp:
    prober: icmp
  icmp_ttl5:
    prober: icmp
    icmp:
      ttl: 5
  icmp_ip4:
    prober: icmp
    icmp:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      payload_size: 1000
      dont_fragment: true
`), 0o600); err != nil {
		t.Fatal(err)
	}
	blackbox := startBlackbox(t, bbe, modules)
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0", "--modules-file="+modules))

	live := probetest.Listen(t, "127.0.0.1:0", nil)
	live6 := probetest.Listen(t, "[::1]:0", nil)
	closed := fmt.Sprintf("127.0.0.1:%d", probetest.ClosedPort(t, "tcp", "127.0.0.1:0"))
	// The leaf expires before the CA: blackbox_exporter's last chain
	// expiry is its verified chain's, CA included, netprobe's the chain
	// the peer sent.
	leaf := ca.Issue(t, "localhost", true, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(30 * time.Minute) })
	expired := ca.Issue(t, "localhost", true, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Hour) })
	serveTLS := func(cert tls.Certificate) *probetest.Target {
		return probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
			if tc.Handshake() == nil {
				probetest.ReadAll(tc)
			}
			tc.Close()
		})
	}
	goodTLS, expiredTLS := serveTLS(leaf), serveTLS(expired)
	ssh := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		io.WriteString(c, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
		probetest.ReadAll(c)
		c.Close()
	})
	notSSH := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		io.WriteString(c, "220 mail ESMTP\r\n")
		c.Close()
	})

	for _, tc := range []struct {
		name, module, target string
		success              float64
	}{
		{"connects", "tcp_connect", live.Addr(), 1},
		{"connects over IPv6", "tcp_connect", live6.Addr(), 1},
		{"refused", "tcp_connect", closed, 0},
		{"TLS that verifies", "tls_connect", goodTLS.Addr(), 1},
		{"an expired certificate", "tls_connect", expiredTLS.Addr(), 0},
		{"an SSH banner", "ssh_banner", ssh.Addr(), 1},
		{"not an SSH banner", "ssh_banner", notSSH.Addr(), 0},
		{"a name that does not resolve", "tcp_connect", "nowhere.invalid:22", 0},
		{"no port", "tcp_connect", "127.0.0.1", 0},
		{"a port out of range", "tcp_connect", "127.0.0.1:65536", 0},
		{"a host that is not one", "tcp_connect", "bad host:22", 0},
		// An echo's target is a host; loopback answers.
		{"an echo", "icmp", "127.0.0.1", 1},
		{"an echo over IPv6", "icmp", "::1", 1},
		{"an echo with a TTL", "icmp_ttl5", "127.0.0.1", 1},
		{"an echo, unfragmented", "icmp_ip4", "127.0.0.1", 1},
		{"an echo of a name", "icmp_ip4", "localhost", 1},
		{"an echo of a name that does not resolve", "icmp", "nowhere.invalid", 0},
		{"an echo of an address of the other family", "icmp_ip4", "::1", 0},
		{"an echo of HOST:PORT", "icmp", "127.0.0.1:22", 0},
		{"an echo of a host that is not one", "icmp", "bad host", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.HasPrefix(tc.module, "icmp") {
				probetest.RequireEcho(t)
			}
			want := scrapeProbe(t, blackbox, tc.module, tc.target)
			got := scrapeProbe(t, p.MetricsAddr, tc.module, tc.target)
			for _, diff := range seriesDiff(want, got) {
				t.Error(diff)
			}
			if v := seriesOf(want["probe_success"])["{}"]; v != tc.success {
				t.Errorf("blackbox_exporter's probe_success is %v, want %v", v, tc.success)
			}
		})
	}
}

// startBlackbox runs blackbox_exporter with the module file config until
// the test ends, and returns its address once it answers.
func startBlackbox(t *testing.T, bin, config string) string {
	t.Helper()
	addr := probetest.FreePort(t)
	cmd := exec.Command(bin, "--config.file="+config, "--web.listen-address="+addr)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("blackbox_exporter:\n%s", log.String())
		}
	})
	probetest.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, func() string { return "blackbox_exporter does not answer on " + addr })
	return addr
}

// scrapeProbe scrapes /probe at addr as Prometheus does (a 5 s scrape
// timeout), and parses the metrics.
func scrapeProbe(t *testing.T, addr, module, target string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpDo(t, "http://"+addr+"/probe?"+url.Values{"module": {module}, "target": {target}}.Encode(),
		http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {"5"}})
	if code != http.StatusOK {
		t.Fatalf("%s: %d %s", addr, code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s: %v\n%s", addr, err, body)
	}
	return families
}

// timed are the metrics whose values are times each probe measures anew.
var timed = []string{"probe_duration_seconds", "probe_dns_lookup_time_seconds", "probe_icmp_duration_seconds"}

// seriesDiff lists what differs between blackbox_exporter's metrics
// (want) and probed's (got), but for probemetrics.Additions.
func seriesDiff(want, got map[string]*dto.MetricFamily) []string {
	var diffs []string
	for name, w := range want {
		g := got[name]
		switch {
		case g == nil:
			diffs = append(diffs, fmt.Sprintf("%s: not given; blackbox_exporter gives %v", name, w))
			continue
		case g.GetType() != w.GetType() || g.GetHelp() != w.GetHelp():
			diffs = append(diffs, fmt.Sprintf("%s: %v %q; blackbox_exporter's is %v %q", name, g.GetType(), g.GetHelp(), w.GetType(), w.GetHelp()))
		}
		gs := seriesOf(g)
		for key, wv := range seriesOf(w) {
			gv, ok := gs[key]
			switch {
			case !ok:
				diffs = append(diffs, fmt.Sprintf("%s%s: not given; blackbox_exporter gives it (probed gives %v)", name, key, slices.Sorted(maps.Keys(gs))))
			case gv != wv && !slices.Contains(timed, name):
				diffs = append(diffs, fmt.Sprintf("%s%s = %v; blackbox_exporter's is %v", name, key, gv, wv))
			}
		}
	}
	for name, g := range got {
		ws := seriesOf(want[name])
		for key := range seriesOf(g) {
			if _, ok := ws[key]; ok {
				continue
			}
			i := slices.IndexFunc(probemetrics.Additions, func(a *probemetrics.Addition) bool { return a.Name == name })
			switch {
			case i < 0:
				diffs = append(diffs, fmt.Sprintf("%s%s: blackbox_exporter does not give it, and it is not among netprobe's additions", name, key))
			case !slices.Equal(labelNames(g), slices.Sorted(slices.Values(probemetrics.Additions[i].Labels))):
				diffs = append(diffs, fmt.Sprintf("%s%s: labels %v, where netprobe's additions say %v", name, key, labelNames(g), probemetrics.Additions[i].Labels))
			}
		}
	}
	slices.Sort(diffs)
	return diffs
}

// seriesOf is a family's values by label set ("{a=x,b=y}").
func seriesOf(f *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, m := range f.GetMetric() {
		var pairs []string
		for _, l := range m.GetLabel() {
			pairs = append(pairs, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
		}
		slices.Sort(pairs)
		out["{"+strings.Join(pairs, ",")+"}"] = m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
	}
	return out
}

// labelNames are the label names of a family's first series, sorted.
func labelNames(f *dto.MetricFamily) []string {
	var out []string
	for _, l := range f.GetMetric()[0].GetLabel() {
		out = append(out, l.GetName())
	}
	slices.Sort(out)
	return out
}
