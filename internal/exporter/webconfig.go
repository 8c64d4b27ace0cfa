package exporter

import (
	"os"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// webConfig is what probed needs to know of the metrics listener's web
// configuration (exporter-toolkit's --web-config-file, which serves TLS
// and checks passwords before any handler runs): whether it has basic
// auth users, whose names then name the scrapers. exporter-toolkit reads
// the file on every request; this reads it again when it changes, looked
// at once a second at most.
type webConfig struct {
	path string

	mu        sync.Mutex
	checked   time.Time
	stamp     time.Time
	basicAuth bool
}

// hasUsers reports whether the file has basic_auth_users. A file that no
// longer reads has none: a name in a request is then no identity.
func (w *webConfig) hasUsers() bool {
	if w == nil || w.path == "" {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if time.Since(w.checked) < webConfigCheckEvery {
		return w.basicAuth
	}
	w.checked = time.Now()
	fi, err := os.Stat(w.path)
	if err == nil && fi.ModTime().Equal(w.stamp) {
		return w.basicAuth
	}
	w.basicAuth = false
	b, err := os.ReadFile(w.path)
	if err != nil {
		return false
	}
	var c struct {
		Users map[string]string `yaml:"basic_auth_users"`
	}
	if yaml.Unmarshal(b, &c) == nil {
		w.basicAuth = len(c.Users) > 0
	}
	if fi != nil {
		w.stamp = fi.ModTime()
	}
	return w.basicAuth
}
