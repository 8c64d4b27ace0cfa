package modules_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestSetDuringSlowReload holds a reload in the middle of checking the
// module file's new modules, and asks for the modules meanwhile, as each
// scrape does: they are the modules in use, at once, since a reload reads
// and checks its file outside the lock scrapes take, and swaps the new
// modules in once they are ready. (Before, the reload held that lock:
// 20,000 modules took 2.4 s to load, and a scrape waited 1.55 s.)
func TestSetDuringSlowReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "modules.yml")
	write := func(text string) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("modules:\n  a:\n    prober: tcp\n")
	checking, release := make(chan struct{}), make(chan struct{})
	slow := false
	st, err := modules.Open(path, func(*modules.Set) error {
		if slow {
			close(checking)
			<-release
		}
		return nil
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	write("modules:\n  b:\n    prober: tcp\n")
	slow = true
	reloaded := make(chan error, 1)
	go func() { reloaded <- st.Reload() }()
	select {
	case <-checking:
	case <-time.After(probetest.Timeout):
		t.Fatal("the reload did not get to checking the modules")
	}
	got := make(chan *modules.Set, 1)
	go func() { got <- st.Set() }()
	select {
	case set := <-got:
		if set.Modules["a"] == nil || set.Modules["b"] != nil {
			t.Errorf("during the reload, modules %v; want the ones in use, a", set.Modules)
		}
	case <-time.After(probetest.Timeout):
		t.Fatal("asking for the modules waited for the reload")
	}
	close(release)
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	if set := st.Set(); set.Modules["b"] == nil {
		t.Errorf("after the reload, modules %v; want b", set.Modules)
	}
}
