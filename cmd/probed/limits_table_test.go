package main

import (
	"os"
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/settings"
)

// The generated table's markers in docs/deploying.md.
const (
	flagsBegin = "<!-- flags: made from probed's settings by `go test ./cmd/probed -run TestFlagsTable -update` -->\n"
	flagsEnd   = "<!-- end of flags -->"
)

// TestFlagsTable checks docs/deploying.md's tables of flags against
// probed's settings, from which -update makes them.
func TestFlagsTable(t *testing.T) {
	const path = "../../docs/deploying.md"
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before, rest, ok := strings.Cut(string(doc), flagsBegin)
	old, after, ok2 := strings.Cut(rest, flagsEnd)
	if !ok || !ok2 {
		t.Fatalf("docs/deploying.md has no table of flags between %q and %q", flagsBegin, flagsEnd)
	}
	want := settings.Markdown(settings.Of(&config{}))
	if old == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(before+flagsBegin+want+flagsEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("docs/deploying.md's tables of flags differ from probed's settings; run go test ./cmd/probed -run TestFlagsTable -update\ndocs:\n%s\nsettings:\n%s", old, want)
}
