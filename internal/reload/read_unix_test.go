//go:build unix

package reload_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/netprobe/netprobe/internal/reload"
)

// TestReadFile offers ReadFile what an operator's mistake, or an attacker
// who can write the configuration's directory, puts where a file should
// be: each is refused at once, saying what it is, and nothing is read from
// a FIFO or a device (a FIFO held the reload for good, /dev/zero took
// probed past 512 MiB).
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "modules.yml")
	if err := os.WriteFile(regular, []byte("modules: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: its size is what is judged.
	if err := f.Truncate(reload.MaxFileBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	link := filepath.Join(dir, "link")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"a regular file", regular, ""},
		{"a FIFO", fifo, fifo + ": not a regular file but a FIFO"},
		{"a link to a FIFO", link, link + ": not a regular file but a FIFO"},
		{"a device that never ends", "/dev/zero", "/dev/zero: not a regular file but a device"},
		{"a directory", dir, dir + ": not a regular file but a directory"},
		{"a file over the cap", big, big + ": 16777217 bytes, over 16777216"},
		{"no file", filepath.Join(dir, "none"), "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := reload.ReadFile(tc.path)
			switch {
			case tc.want == "" && (err != nil || string(b) != "modules: {}\n"):
				t.Errorf("%q, %v", b, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("%d bytes, %v; want %q", len(b), err, tc.want)
			}
		})
	}
}
