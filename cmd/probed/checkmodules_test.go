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
