package reload_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/reload"
)

// value is a file whose content must be "ok ..." to load; the content of
// the last that did is what is in use.
type value struct {
	path string
	mu   sync.Mutex
	v    string
}

func (v *value) load() error {
	b, err := os.ReadFile(v.path)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(b), "ok") {
		return errors.New("not ok")
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.v = string(b)
	return nil
}

func (v *value) get() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.v
}

func gauge(t *testing.T, reg *prometheus.Registry, name, file string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if labels(m.GetLabel())["file"] == file {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func labels(pairs []*dto.LabelPair) map[string]string {
	out := map[string]string{}
	for _, p := range pairs {
		out[p.GetName()] = p.GetValue()
	}
	return out
}

// TestFiles loads a file at start, again when it changes, keeps what it
// had when the change does not load (the metric and the state say so),
// and takes the fix; Reload does the same at once.
func TestFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ok 1")
	reg := prometheus.NewRegistry()
	fs := reload.New(reg, slog.New(slog.DiscardHandler))
	v := &value{path: path}
	if err := fs.Add(reload.File{Name: "f", Paths: []string{path}, Load: v.load}); err != nil {
		t.Fatal(err)
	}
	if v.get() != "ok 1" || gauge(t, reg, "netprobe_config_last_reload_successful", "f") != 1 {
		t.Fatalf("at start: %q", v.get())
	}
	ctx := probetest.Context(t)
	go fs.Watch(ctx)

	write("broken, and longer")
	probetest.Eventually(t, func() bool { return gauge(t, reg, "netprobe_config_last_reload_successful", "f") == 0 }, func() string {
		return "the broken file is not reported"
	})
	if st := fs.States()[0]; st.OK || st.Err != "not ok" || v.get() != "ok 1" {
		t.Errorf("after a broken change: %+v, in use %q; want the old value kept and the error said", st, v.get())
	}
	if err := fs.Reload(); err == nil || !strings.Contains(err.Error(), "f: not ok") {
		t.Errorf("Reload of a broken file: %v", err)
	}

	// Its size differs too: a change within the clock's resolution counts.
	write("ok 2, fixed")
	probetest.Eventually(t, func() bool { return v.get() == "ok 2, fixed" }, func() string { return "the fixed file was not loaded" })
	if st := fs.States()[0]; !st.OK || st.Err != "" || gauge(t, reg, "netprobe_config_last_reload_successful", "f") != 1 {
		t.Errorf("after the fix: %+v", st)
	}
	if ts := gauge(t, reg, "netprobe_config_last_reload_success_timestamp_seconds", "f"); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("last success at %v", ts)
	}

	// A file that does not load at start stops it.
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("no"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fs.Add(reload.File{Name: "bad", Paths: []string{bad}, Load: (&value{path: bad}).load}); err == nil {
		t.Error("a file that does not load at start was added")
	}
}
