package exporter

import (
	"fmt"
	"sync/atomic"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v3"

	"github.com/netprobe/netprobe/internal/reload"
)

// webConfig is what probed needs to know of the metrics listener's web
// configuration (exporter-toolkit's --web-config-file, which serves TLS
// and checks passwords before any handler runs): whether it has basic
// auth users, whose names then name the scrapers. exporter-toolkit reads
// the file on every request; probed's files load it again (load) when it
// changes.
type webConfig struct {
	path      string
	basicAuth atomic.Bool
}

// load checks the file as exporter-toolkit reads it, and notes whether it
// has basic auth users.
func (w *webConfig) load() error {
	if err := web.Validate(w.path); err != nil {
		return fmt.Errorf("%s: %w", w.path, err)
	}
	b, err := reload.ReadFile(w.path)
	if err != nil {
		return err
	}
	var c struct {
		Users map[string]string `yaml:"basic_auth_users"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return fmt.Errorf("%s: %w", w.path, err)
	}
	w.basicAuth.Store(len(c.Users) > 0)
	return nil
}

// hasUsers reports whether the file has basic_auth_users: only then does
// a basic auth user name a caller.
func (w *webConfig) hasUsers() bool { return w.basicAuth.Load() }

// WebConfigFile is the listener's web configuration as probed's files
// keep it current, loaded when they add it; ok is false when there is
// none.
func (m *Server) WebConfigFile() (f reload.File, ok bool) {
	if m.web.path == "" {
		return reload.File{}, false
	}
	return reload.File{Name: "web-config-file", Paths: []string{m.web.path}, Load: m.web.load}, true
}
