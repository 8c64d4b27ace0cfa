package server_test

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/exporter"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// TestScrapeModulesThatCannotRun loads module files with a module no
// scrape could run, as the probe service would refuse its request: the
// file does not load (at start, and on reload, which keeps the modules in
// use), naming the module and why. (Before, such a module loaded and
// every scrape of it answered 400.)
func TestScrapeModulesThatCannotRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := probetest.WriteFiles(t, dir, probetest.NewCA(t).Issue(t, "scraper", false))
	withCert := func(name string) string {
		return fmt.Sprintf("modules:\n  %q:\n    prober: tcp\n    tcp:\n      tls: true\n      tls_config:\n        cert_file: %s\n        key_file: %s\n", name, certFile, keyFile)
	}
	longest := strings.Repeat("m", 57)
	for _, tc := range []struct {
		name, text, want string
	}{
		{"a space in the name of a module with a certificate", withCert("my module"),
			`module my module cannot be scraped: tls.client_identity: "module/my module" is not an identity's name: character ' ' is not allowed (the module's client certificate is presented as the client identity module/my module)`},
		{"a name too long for a module with a certificate", withCert(longest + "m"), "module " + longest + "m cannot be scraped: tls.client_identity: "},
		{"max_bytes over the server's cap", "modules:\n  big:\n    prober: tcp\n    netprobe:\n      max_bytes: 1000000000000\n    tcp:\n      query_response:\n      - expect: x\n",
			"module big cannot be scraped: max_bytes: 1000000000000 is over the server's cap of 67108864"},
		{"a datagram over the payload cap", "modules:\n  loud:\n    prober: udp\n    netprobe:\n      payload: \"" + strings.Repeat("x", 2<<20) + "\"\n",
			"module loud cannot be scraped: payload: 2097152 bytes is over the server's cap of 1048576"},
		// A jumbo frame's echo is the most; an IPv4 packet's is refused
		// as the file is read, with the module's key.
		{"an echo over the payload cap", "modules:\n  jumbo:\n    prober: icmp\n    icmp:\n      payload_size: 8973\n",
			"module jumbo cannot be scraped: icmp.payload_size: 8973 bytes is over the cap of 8972"},
		{"an echo from an address the server may not bind", "modules:\n  sourced:\n    prober: icmp\n    icmp:\n      source_ip_address: 127.0.0.1\n",
			"module sourced: source_ip_address 127.0.0.1 is not an address this server may bind (probed --allow-source)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeModules(t, t.TempDir(), tc.text)
			if _, err := server.New(server.Config{Exporter: exporter.Config{ModulesFile: path}}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v\nwant %q", err, tc.want)
			}
			if _, _, err := server.CheckModules(path, server.Config{}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckModules: %v\nwant %q", err, tc.want)
			}
		})
	}
	// The largest echo loads.
	if _, _, err := server.CheckModules(writeModules(t, t.TempDir(), "modules:\n  jumbo:\n    prober: icmp\n    icmp:\n      payload_size: 8972\n"), server.Config{}); err != nil {
		t.Errorf("an echo of 8972 bytes: %v", err)
	}
	// The longest name that can be an identity loads, and a reload to a
	// file that cannot run keeps it.
	path := writeModules(t, dir, withCert(longest))
	srv := probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.Exporter.ModulesFile = path }))
	writeModules(t, dir, withCert("my module"))
	if err := srv.Server.Reload(); err == nil || !strings.Contains(err.Error(), "module my module cannot be scraped") {
		t.Errorf("reloading a module that cannot run: %v", err)
	}
	target := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) { c.Close() })
	if code, body := newScraper(t, srv).get(t, url.Values{"module": {longest}, "target": {target.Addr()}}, nil); code != http.StatusOK {
		t.Errorf("the module kept: %d\n%s", code, body)
	}
}
