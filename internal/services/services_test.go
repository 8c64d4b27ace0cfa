package services

import (
	"os"
	"path/filepath"
	"testing"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "services")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLookup(t *testing.T) {
	system := writeFile(t, `# a test database
http		8080/tcp	www web   # not the real port, so the source shows
bogus		notaport/tcp
short
gopher		70/tcp
gopher-alt	70/tcp
`)
	tab, err := Load(system)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		lookupName string
		port       uint16
		protocol   string
		wantName   string
		wantPort   uint16
		wantSource Source
		wantOK     bool
	}{
		{name: "system wins", lookupName: "http", protocol: "tcp", wantName: "http", wantPort: 8080, wantSource: System, wantOK: true},
		{name: "alias, any case", lookupName: "WEB", protocol: "TCP", wantName: "http", wantPort: 8080, wantSource: System, wantOK: true},
		{name: "builtin fallback", lookupName: "ssh", protocol: "tcp", wantName: "ssh", wantPort: 22, wantSource: Builtin, wantOK: true},
		{name: "builtin alias", lookupName: "postgres", protocol: "tcp", wantName: "postgresql", wantPort: 5432, wantSource: Builtin, wantOK: true},
		{name: "protocol matters", lookupName: "ssh", protocol: "udp", wantOK: false},
		{name: "unknown", lookupName: "no-such-service", protocol: "tcp", wantOK: false},
		{name: "by port, system", port: 8080, protocol: "tcp", wantName: "http", wantPort: 8080, wantSource: System, wantOK: true},
		{name: "by port, first entry wins", port: 70, protocol: "tcp", wantName: "gopher", wantPort: 70, wantSource: System, wantOK: true},
		{name: "by port, builtin", port: 53, protocol: "udp", wantName: "domain", wantPort: 53, wantSource: Builtin, wantOK: true},
		{name: "by port, unknown", port: 65000, protocol: "tcp", wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e *Entry
			var ok bool
			if tt.lookupName != "" {
				e, ok = tab.ByName(tt.lookupName, tt.protocol)
			} else {
				e, ok = tab.ByPort(tt.port, tt.protocol)
			}
			if ok != tt.wantOK {
				t.Fatalf("found = %v, want %v (entry %+v)", ok, tt.wantOK, e)
			}
			if !ok {
				return
			}
			if e.Name != tt.wantName || e.Port != tt.wantPort || e.Source != tt.wantSource {
				t.Errorf("got %s %d source %d, want %s %d source %d", e.Name, e.Port, e.Source, tt.wantName, tt.wantPort, tt.wantSource)
			}
		})
	}
}

func TestMissingSystemDatabaseFallsBack(t *testing.T) {
	tab, err := Load(filepath.Join(t.TempDir(), "absent"))
	if err != nil {
		t.Fatal(err)
	}
	e, ok := tab.ByName("https", "tcp")
	if !ok || e.Port != 443 || e.Source != Builtin {
		t.Fatalf("https/tcp = %+v, %v; want 443 from the built-in table", e, ok)
	}
}

// TestBuiltinTable checks the embedded table parses whole: every non-comment
// line is an entry, so a typo cannot silently drop a service.
func TestBuiltinTable(t *testing.T) {
	tab, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		name  string
		proto string
		port  uint16
	}{{"ftp", "tcp", 21}, {"domain", "udp", 53}, {"ntp", "udp", 123}, {"imaps", "tcp", 993}, {"mysql", "tcp", 3306}, {"redis", "tcp", 6379}} {
		e, ok := tab.ByName(want.name, want.proto)
		if !ok || e.Port != want.port {
			t.Errorf("%s/%s = %+v, %v; want port %d", want.name, want.proto, e, ok, want.port)
		}
	}
	if n := len(tab.builtin.byPort); n < 100 {
		t.Errorf("built-in table has %d port entries, want at least 100", n)
	}
}
