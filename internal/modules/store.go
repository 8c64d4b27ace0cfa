package modules

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// checkEvery is how often a Store looks at its file for a change, at most.
const checkEvery = time.Second

// Store is the modules in use: a module file's, checked as they load and
// read again when the file changes (looked at once a second at most, as
// they are asked for) or on Reload; a file that does not load, or whose
// modules do not pass the check, leaves the modules as they were. Without
// a file, the defaults.
type Store struct {
	file   string
	check  func(*Set) error
	logger *slog.Logger

	// reloading is held while the module file is read and checked, which
	// takes seconds for a file of many thousand modules: outside mu, so
	// that readers never wait for it.
	reloading sync.Mutex
	// mu guards the modules in use, swapped in whole.
	mu      sync.Mutex
	set     *Set
	stamp   time.Time
	checked time.Time
	// failed is the modification time of the last file that did not
	// load, which is not read again until it changes.
	failed time.Time
}

// Open loads the modules of file, each checked by check; "" is the
// defaults.
func Open(file string, check func(*Set) error, logger *slog.Logger) (*Store, error) {
	st := &Store{file: file, check: check, logger: logger}
	if file == "" {
		st.set = Defaults()
		return st, nil
	}
	set, stamp, warnings, err := LoadChecked(file, check)
	if err != nil {
		return nil, err
	}
	st.logWarnings(warnings)
	st.set, st.stamp, st.checked = set, stamp, time.Now()
	return st, nil
}

// LoadChecked loads the module file at path and checks its modules with
// check, returning them, the file's modification time and the modules it
// will not run.
func LoadChecked(path string, check func(*Set) error) (*Set, time.Time, []string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, time.Time{}, nil, err
	}
	set, warnings, err := Load(path)
	if err != nil {
		return nil, time.Time{}, nil, err
	}
	if err := check(set); err != nil {
		return nil, time.Time{}, nil, fmt.Errorf("%s: %w", path, err)
	}
	return set, fi.ModTime(), warnings, nil
}

// File is the module file, "" for the defaults.
func (st *Store) File() string { return st.file }

func (st *Store) logWarnings(warnings []string) {
	for _, w := range warnings {
		st.logger.Warn("module file", "file", st.file, "warning", w)
	}
}

// Set returns the modules in use. Once a second at most, it looks at
// the module file, and if it changed, reloads it in the background: the
// scrape goes on with the modules as they are, and a file that no longer
// loads leaves them so.
func (st *Store) Set() *Set {
	st.mu.Lock()
	set, stamp, failed := st.set, st.stamp, st.failed
	due := st.file != "" && time.Since(st.checked) >= checkEvery
	if due {
		st.checked = time.Now()
	}
	st.mu.Unlock()
	if !due {
		return set
	}
	if fi, err := os.Stat(st.file); err == nil && (fi.ModTime().Equal(stamp) || fi.ModTime().Equal(failed)) {
		return set
	}
	// Another reload under way will see the change.
	if st.reloading.TryLock() {
		go func() {
			defer st.reloading.Unlock()
			st.reloadLocked()
		}()
	}
	return set
}

// Reload reads the module file again (SIGHUP), keeping the modules as
// they were when it does not load.
func (st *Store) Reload() error {
	if st.file == "" {
		return nil
	}
	st.reloading.Lock()
	defer st.reloading.Unlock()
	return st.reloadLocked()
}

// reloadLocked loads the module file, holding reloading, and swaps the
// modules in under mu.
func (st *Store) reloadLocked() error {
	set, stamp, warnings, err := LoadChecked(st.file, st.check)
	if err != nil {
		st.logger.Error("module file not reloaded: keeping the modules as they were", "file", st.file, "err", err)
		if fi, statErr := os.Stat(st.file); statErr == nil {
			st.mu.Lock()
			st.failed = fi.ModTime()
			st.mu.Unlock()
		}
		return err
	}
	st.logWarnings(warnings)
	st.mu.Lock()
	st.set, st.stamp = set, stamp
	st.mu.Unlock()
	st.logger.Info("reloaded the module file", "file", st.file, "modules", len(set.Modules))
	return nil
}

// Certificate is the client certificate of a module, as the identity
// "module/NAME" names it.
func (st *Store) Certificate(name string) (*tls.Certificate, bool) {
	mod := st.Set().Modules[strings.TrimPrefix(name, IdentityPrefix)]
	if mod == nil || mod.ClientCert == nil || !strings.HasPrefix(name, IdentityPrefix) {
		return nil, false
	}
	return mod.ClientCert, true
}
