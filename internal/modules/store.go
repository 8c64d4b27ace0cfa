package modules

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// Store is the modules in use: a module file's, checked as they load, and
// loaded again on Reload (which probed's files, internal/reload, call
// when the file changes); a file that does not load, or whose modules do
// not pass the check, leaves the modules as they were. Without a file, the
// defaults.
type Store struct {
	file   string
	check  func(*Set) error
	logger *slog.Logger

	// reloading is held while the module file is read and checked, which
	// takes seconds for a file of many thousand modules: outside mu, so
	// that readers never wait for it.
	reloading sync.Mutex
	// mu guards the modules in use, swapped in whole.
	mu  sync.Mutex
	set *Set
}

// Open loads the modules of file, each checked by check; "" is the
// defaults.
func Open(file string, check func(*Set) error, logger *slog.Logger) (*Store, error) {
	st := &Store{file: file, check: check, logger: logger}
	if file == "" {
		st.set = Defaults()
		return st, nil
	}
	set, warnings, err := LoadChecked(file, check)
	if err != nil {
		return nil, err
	}
	st.logWarnings(warnings)
	st.set = set
	return st, nil
}

// LoadChecked loads the module file at path and checks its modules with
// check, returning them and the modules it will not run.
func LoadChecked(path string, check func(*Set) error) (*Set, []string, error) {
	set, warnings, err := Load(path)
	if err != nil {
		return nil, nil, err
	}
	if err := check(set); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return set, warnings, nil
}

// File is the module file, "" for the defaults.
func (st *Store) File() string { return st.file }

func (st *Store) logWarnings(warnings []string) {
	for _, w := range warnings {
		st.logger.Warn("module file", "file", st.file, "warning", w)
	}
}

// Set returns the modules in use.
func (st *Store) Set() *Set {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.set
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
	set, warnings, err := LoadChecked(st.file, st.check)
	if err != nil {
		return err
	}
	st.logWarnings(warnings)
	st.mu.Lock()
	st.set = set
	st.mu.Unlock()
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
