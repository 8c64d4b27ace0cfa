package main

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/probetest"
)

// TestCheckModulesRefusesUnscrapable checks a module file holding a module
// no scrape could run, a client certificate under a name with a space
// (its identity, module/NAME, cannot have one): --check-modules exits 1
// naming the module and why, and probed refuses to start with it.
func TestCheckModulesRefusesUnscrapable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := probetest.WriteFiles(t, dir, probetest.NewCA(t).Issue(t, "scraper", false))
	file := writeFile(t, "modules.yml", fmt.Sprintf(`modules:
  "my module":
    prober: tcp
    tcp:
      tls: true
      tls_config:
        cert_file: %s
        key_file: %s
`, certFile, keyFile))
	// (The log quotes what the error quotes.)
	const want = `is not an identity's name: character ' ' is not allowed`
	for _, args := range [][]string{
		{"--check-modules", file},
		{"--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0", "--modules-file=" + file},
	} {
		out, err := exec.CommandContext(probetest.Context(t), probedBin, args...).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "module my module cannot be scraped: tls.client_identity: ") || !strings.Contains(string(out), want) {
			t.Errorf("probed %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestCheckModulesRefusesTrace refuses module files whose netprobe.trace
// is out of bounds, naming the module and the option, at --check-modules
// as at start: hop and probe counts past their caps, a timeout that is
// not positive, and one longer than the server's --max-timeout (the
// module check's, as the probe service would refuse every scrape).
func TestCheckModulesRefusesTrace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, trace, want string }{
		{"max_hops 0", "max_hops: 0", "module traced, line 6: max_hops 0 is out of range 1-64"},
		{"max_hops 65", "max_hops: 65", "module traced, line 6: max_hops 65 is out of range 1-64"},
		{"probes_per_hop 11", "probes_per_hop: 11", "module traced, line 6: probes_per_hop 11 is out of range 1-10"},
		{"negative timeout", "timeout: -1s", "module traced, line 6: timeout -1s is not positive"},
		{"timeout over --max-timeout", "timeout: 6s", "module traced cannot be scraped: netprobe.trace.timeout: 6s is over the server's maximum of 5s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := writeFile(t, "modules.yml", "modules:\n  traced:\n    prober: tcp\n    netprobe:\n      trace:\n        "+tc.trace+"\n")
			for _, args := range [][]string{
				{"--max-timeout=5s", "--check-modules", file},
				{"--max-timeout=5s", "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0", "--modules-file=" + file},
			} {
				out, err := exec.CommandContext(probetest.Context(t), probedBin, args...).CombinedOutput()
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), tc.want) {
					t.Errorf("probed %s: %v, want exit 1 and %q:\n%s", strings.Join(args, " "), err, tc.want, out)
				}
			}
		})
	}
}
