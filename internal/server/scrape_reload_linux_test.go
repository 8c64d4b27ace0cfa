package server_test

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// TestScrapeDuringSlowReload holds a reload in the middle of reading the
// module file, a FIFO nothing has been written to yet, and scrapes
// meanwhile: the scrape is answered with the modules in use, since a
// reload reads and checks its file outside the lock scrapes take, and
// swaps the modules in once they are ready. (Before, the reload held that
// lock: 20,000 modules took 2.4 s to load, and a scrape waited 1.55 s.)
func TestScrapeDuringSlowReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeModules(t, dir, "modules:\n  a:\n    prober: tcp\n")
	srv := probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.Exporter.ModulesFile = path }))
	s := newScraper(t, srv)
	tg := probetest.Listen(t, "127.0.0.1:0", nil)
	s.probe(t, "a", tg.Addr())

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	reloaded := make(chan error, 1)
	go func() { reloaded <- srv.Server.Reload() }()
	// The FIFO opens for writing once the reload has opened it to read:
	// the reload is then under way, and waits for the file's text.
	var w *os.File
	deadline := time.Now().Add(probetest.Timeout)
	for {
		var err error
		if w, err = os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			break
		}
		if !errors.Is(err, unix.ENXIO) || time.Now().After(deadline) {
			t.Fatalf("the reload did not open the module file: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Should the scrape below wait for the reload, closing the FIFO lets
	// the reload end, and the server with it.
	t.Cleanup(func() { w.Close() })
	s.probe(t, "a", tg.Addr())
	io.WriteString(w, "modules:\n  b:\n    prober: tcp\n")
	w.Close()
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	// A file again, for the reloads that later scrapes may start.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	writeModules(t, dir, "modules:\n  b:\n    prober: tcp\n")
	s.probe(t, "b", tg.Addr())
}
