package server_test

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// TestPageListsModulesBounded serves a module file of 1,000 modules and
// 150 of other probers: the page lists the first 100 of each and says how
// many more there are and where to see them, so its size does not grow
// with the file. (Before, 20,000 modules made a page of 1.6 MB.)
func TestPageListsModulesBounded(t *testing.T) {
	t.Parallel()
	var text strings.Builder
	text.WriteString("modules:\n")
	for i := range 1000 {
		fmt.Fprintf(&text, "  tcp_%04d:\n    prober: tcp\n", i)
	}
	for i := range 150 {
		fmt.Fprintf(&text, "  http_%04d:\n    prober: http\n", i)
	}
	path := writeModules(t, t.TempDir(), text.String())
	srv := probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.Exporter.ModulesFile = path }))
	rec := httptest.NewRecorder()
	srv.Metrics(t).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	page := rec.Body.String()
	_, modules, _ := strings.Cut(page, `<table id="modules">`)
	modules, _, _ = strings.Cut(modules, "</table>")
	if rows := strings.Count(modules, "<tr><td>"); rows != 100 || !strings.Contains(modules, "tcp_0099") || strings.Contains(modules, "tcp_0100") {
		t.Errorf("the page lists %d modules, want tcp_0000 to tcp_0099", rows)
	}
	for _, want := range []string{"And 900 more, not listed here: <code>probed --check-modules " + path + "</code> lists them all.", "http_0099 (http), and 50 more."} {
		if !strings.Contains(page, want) {
			t.Errorf("the page does not say %q", want)
		}
	}
	if strings.Contains(page, "http_0100") || len(page) > 64<<10 {
		t.Errorf("the page lists more than 100 modules of other probers, or is %d bytes", len(page))
	}
}
