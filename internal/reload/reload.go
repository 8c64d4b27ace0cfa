// Package reload keeps the files probed reads current, all the same way:
// each is loaded at start, and again when it changes (looked at once a
// second), on SIGHUP, or on POST /-/reload. A file that does not load
// leaves what was loaded from it in use; its state (when it last loaded,
// whether the last try did, and why not) is in the metrics, as
// blackbox_exporter and Prometheus report theirs, and on the status page.
package reload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Every is how often the files are looked at for a change.
const Every = time.Second

// A File is a file, or files that go together (a certificate and its
// key), that something loads.
type File struct {
	// Name names it in the metrics and on the page: the flag that gives
	// it, such as "tls-cert" or "client-identity billing".
	Name string
	// Paths are the files; a change to any of them reloads it.
	Paths []string
	// Load reads the files and puts what they hold in use, or fails and
	// leaves what was in use.
	Load func() error
}

// State is where a file stands.
type State struct {
	Name, Path string
	// OK is whether the last load succeeded, Loaded when the last
	// successful one was, and Err why the last one failed.
	OK     bool
	Loaded time.Time
	Err    string
}

// Files are the files probed reads.
type Files struct {
	logger  *slog.Logger
	ok      *prometheus.GaugeVec
	success *prometheus.GaugeVec

	mu    sync.Mutex
	files []*file
}

type file struct {
	File
	// stamps are the paths' modification times and sizes when last
	// looked at.
	stamps []stamp
	state  State
}

type stamp struct {
	mod  time.Time
	size int64
}

// New returns an empty set of files, whose metrics are registered on reg.
func New(reg prometheus.Registerer, logger *slog.Logger) *Files {
	fs := &Files{
		logger: logger,
		ok: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "netprobe_config_last_reload_successful",
			Help: "Whether the last load of each file probed reads succeeded (1) or failed (0), by file (the flag that names it).",
		}, []string{"file"}),
		success: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "netprobe_config_last_reload_success_timestamp_seconds",
			Help: "When each file probed reads last loaded, in Unix seconds, by file.",
		}, []string{"file"}),
	}
	reg.MustRegister(fs.ok, fs.success)
	return fs
}

// Add loads f and keeps it current from now on. A file that does not load
// now is an error: probed does not start without it.
func (fs *Files) Add(f File) error {
	x := &file{File: f, stamps: stamps(f.Paths), state: State{Name: f.Name, Path: f.Paths[0]}}
	if err := fs.load(x); err != nil {
		return err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.files = append(fs.files, x)
	return nil
}

// Keep keeps f current from now on, as Add does, f having been loaded
// already (when it is costly to load twice, as a module file of thousands
// of modules is).
func (fs *Files) Keep(f File) {
	x := &file{File: f, stamps: stamps(f.Paths), state: State{Name: f.Name, Path: f.Paths[0], OK: true, Loaded: time.Now()}}
	fs.ok.WithLabelValues(f.Name).Set(1)
	fs.success.WithLabelValues(f.Name).Set(float64(x.state.Loaded.UnixNano()) / 1e9)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.files = append(fs.files, x)
}

// load loads x and records how it went. Each of its paths must be a
// regular file within MaxFileBytes, whoever reads it.
func (fs *Files) load(x *file) error {
	var err error
	for _, p := range x.Paths {
		if err = check(p); err != nil {
			break
		}
	}
	if err == nil {
		err = x.Load()
	}
	now := time.Now()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	x.state.OK = err == nil
	x.state.Err = ""
	if err != nil {
		x.state.Err = err.Error()
		fs.ok.WithLabelValues(x.Name).Set(0)
		return fmt.Errorf("%s: %w", x.Name, err)
	}
	x.state.Loaded = now
	fs.ok.WithLabelValues(x.Name).Set(1)
	fs.success.WithLabelValues(x.Name).Set(float64(now.UnixNano()) / 1e9)
	return nil
}

// Reload loads every file again, and returns why those that failed did.
func (fs *Files) Reload() error {
	fs.mu.Lock()
	files := slices.Clone(fs.files)
	fs.mu.Unlock()
	var errs []error
	for _, x := range files {
		if err := fs.load(x); err != nil {
			fs.logger.Error("reloading failed; keeping what was loaded", "file", x.Name, "err", err)
			errs = append(errs, err)
		} else {
			fs.logger.Info("reloaded", "file", x.Name, "path", x.Paths[0])
		}
	}
	return errors.Join(errs...)
}

// Watch loads again each file that changed, looking every Every, until
// ctx ends.
func (fs *Files) Watch(ctx context.Context) {
	tick := time.NewTicker(Every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		fs.mu.Lock()
		var changed []*file
		for _, x := range fs.files {
			if now := stamps(x.Paths); !slices.Equal(now, x.stamps) {
				x.stamps = now
				changed = append(changed, x)
			}
		}
		fs.mu.Unlock()
		for _, x := range changed {
			if err := fs.load(x); err != nil {
				fs.logger.Error("a file changed and does not load; keeping what was loaded", "file", x.Name, "err", err)
			} else {
				fs.logger.Info("reloaded a file that changed", "file", x.Name, "path", x.Paths[0])
			}
		}
	}
}

// States are where the files stand, in the order they were added.
func (fs *Files) States() []State {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := make([]State, len(fs.files))
	for i, x := range fs.files {
		out[i] = x.state
	}
	return out
}

// stamps are the paths' modification times and sizes; a path that cannot
// be looked at has the zero stamp, so that its coming back is a change.
func stamps(paths []string) []stamp {
	out := make([]stamp, len(paths))
	for i, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			out[i] = stamp{fi.ModTime(), fi.Size()}
		}
	}
	return out
}
