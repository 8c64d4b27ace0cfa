package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestPrometheusICMP runs Debian's blackbox.yml, unchanged, in Debian's
// blackbox_exporter and in probed side by side, both scraped by a real
// Prometheus that alerts on probe_success == 0, all three in a network
// namespace of their own: its icmp and icmp_ttl5 modules echo loopback in
// both families (answered), an address whose echoes the namespace drops
// (no answer: the timeout), and one it has no route to. Both exporters
// answer each target with the same probe_success, and the alert fires
// for the same two targets of each, and for no other.
func TestPrometheusICMP(t *testing.T) {
	prometheus := probetest.Program(t, "prometheus", "apt-get install prometheus (Debian's package)")
	bbe := probetest.Program(t, "prometheus-blackbox-exporter", "apt-get install prometheus-blackbox-exporter (Debian's package)")
	const debianModules = "/etc/prometheus/blackbox.yml"
	if _, err := os.Stat(debianModules); err != nil {
		t.Fatalf("Debian's module file: %v", err)
	}
	host := &netlab.Host{Namespace: netlab.NewNamespace(t)}
	const dropped, unroutable = "127.0.0.3", "198.51.100.1"
	host.NFT(t, `table inet echo {
	chain input {
		type filter hook input priority 0;
		ip daddr `+dropped+` icmp type echo-request drop
	}
}`)
	// The namespace's own: nothing else listens there.
	const blackbox, web = "127.0.0.1:9115", "127.0.0.1:9090"
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = host.Do(func() error {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}}
	t.Cleanup(client.CloseIdleConnections)
	dir := t.TempDir()
	run := func(name string, cmd *exec.Cmd) {
		var log strings.Builder
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("%s:\n%s", name, log.String())
			}
		})
	}
	run("blackbox_exporter", host.Command(bbe, "--config.file="+debianModules, "--web.listen-address="+blackbox))
	var p *probetest.Probed
	if err := host.Do(func() (err error) {
		p, err = probetest.Launch(exec.Command(probedBin, "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0", "--modules-file="+debianModules))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)

	targets := []string{"127.0.0.1", "::1", dropped, unroutable}
	rules := filepath.Join(dir, "rules.yml")
	if err := os.WriteFile(rules, []byte(`groups:
- name: probes
  rules:
  - alert: ProbeFailed
    expr: probe_success == 0
`), 0o600); err != nil {
		t.Fatal(err)
	}
	config := "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files: ['" + rules + "']\nscrape_configs:\n" +
		probeJob("probed_icmp", p.MetricsAddr, "icmp", targets...) + probeJob("blackbox_exporter_icmp", blackbox, "icmp", targets...) +
		probeJob("probed_icmp_ttl5", p.MetricsAddr, "icmp_ttl5", "127.0.0.1") + probeJob("blackbox_exporter_icmp_ttl5", blackbox, "icmp_ttl5", "127.0.0.1")
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	run("prometheus", host.Command(prometheus, "--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web, "--log.level=warn"))

	// value waits, within 30 s (as waitQuery), for query to have one
	// value that done accepts, and returns the last it had.
	value := func(query string, done func(float64) bool) float64 {
		t.Helper()
		var v float64
		probetest.EventuallyWithin(t, 30*time.Second, func() bool {
			var ok bool
			v, ok = instantQueryVia(t, client, web, query)
			return ok && done(v)
		}, func() string { return fmt.Sprintf("prometheus: %s = %v", query, v) })
		return v
	}
	anything := func(float64) bool { return true }
	for _, exporter := range []string{"probed", "blackbox_exporter"} {
		for _, tc := range []struct {
			module, target string
			want           float64
		}{
			{"icmp", "127.0.0.1", 1},
			{"icmp", "::1", 1},
			{"icmp", dropped, 0},
			{"icmp", unroutable, 0},
			{"icmp_ttl5", "127.0.0.1", 1},
		} {
			q := fmt.Sprintf(`probe_success{job="%s_%s",instance=%q}`, exporter, tc.module, tc.target)
			if got := value(q, anything); got != tc.want {
				t.Errorf("%s = %v, want %v", q, got, tc.want)
			}
		}
		q := fmt.Sprintf(`probe_icmp_reply_hop_limit{job="%s_icmp",instance="127.0.0.1"}`, exporter)
		if got := value(q, anything); got != 64 {
			t.Errorf("%s = %v, want 64", q, got)
		}
		// The alert fires for the two targets that do not answer, and
		// for no other.
		firing := fmt.Sprintf(`count(ALERTS{alertname="ProbeFailed",alertstate="firing",job=~"%s_.*"})`, exporter)
		value(fmt.Sprintf(`count(ALERTS{alertname="ProbeFailed",alertstate="firing",job="%s_icmp",instance=~"%s|%s"})`, exporter, dropped, unroutable),
			func(v float64) bool { return v == 2 })
		if got := value(firing, anything); got != 2 {
			t.Errorf("%s = %v, want 2: only the targets that do not answer", firing, got)
		}
	}
	// And netprobe says why each failed.
	for target, want := range map[string]string{
		dropped:    `stage="STAGE_ECHO",reason="REASON_TIMEOUT"`,
		unroutable: `stage="STAGE_SEND",reason="REASON_NETWORK_UNREACHABLE"`,
	} {
		q := fmt.Sprintf(`probe_failure_info{job="probed_icmp",instance=%q,%s}`, target, want)
		if got := value(q, anything); got != 1 {
			t.Errorf("%s = %v, want 1", q, got)
		}
	}
}
