package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestPrometheusDoc checks docs/prometheus.md's configurations: its module
// files load, its scrape configuration passes promtool, and its
// --check-modules example prints what probed prints.
func TestPrometheusDoc(t *testing.T) {
	doc, err := os.ReadFile("../../docs/prometheus.md")
	if err != nil {
		t.Fatal(err)
	}
	var moduleFiles, scrapeConfigs []string
	for _, part := range strings.Split(string(doc), "```yaml\n")[1:] {
		block, _, _ := strings.Cut(part, "```")
		switch {
		case strings.HasPrefix(block, "modules:"):
			moduleFiles = append(moduleFiles, block)
		case strings.HasPrefix(block, "scrape_configs:"):
			scrapeConfigs = append(scrapeConfigs, block)
		}
	}
	if len(moduleFiles) == 0 || len(scrapeConfigs) == 0 {
		t.Fatalf("%d module files and %d scrape configurations in the doc", len(moduleFiles), len(scrapeConfigs))
	}
	for _, text := range moduleFiles {
		set, warnings, err := modules.Parse([]byte(text), "")
		if err != nil || len(warnings) > 0 || len(set.Modules) == 0 {
			t.Errorf("%v, %q, loading\n%s", err, warnings, text)
		}
	}
	promtool := probetest.Program(t, "promtool", "apt-get install prometheus (Debian's package)")
	for _, text := range scrapeConfigs {
		file := filepath.Join(t.TempDir(), "prometheus.yml")
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		// Syntax only: the files a configuration names (a token's) are
		// the reader's, not this machine's.
		if out, err := exec.Command(promtool, "check", "config", "--syntax-only", file).CombinedOutput(); err != nil {
			t.Errorf("promtool check config: %v\n%s\nof\n%s", err, out, text)
		}
	}

	_, example, _ := strings.Cut(string(doc), "$ probed --check-modules blackbox.yml\n")
	example, _, _ = strings.Cut(example, "```")
	cmd := exec.Command(probedBin, "--check-modules", "../../internal/modules/testdata/blackbox.yml")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("--check-modules: %v\n%s", err, out)
	}
	got := strings.ReplaceAll(string(out), filepath.Join(mustAbs(t, "../../internal/modules/testdata"), "blackbox.yml"), "blackbox.yml")
	lines := strings.Split(strings.TrimSpace(example), "\n")
	if !strings.HasPrefix(got, lines[0]+"\n") || !strings.HasSuffix(got, lines[len(lines)-1]+"\n") {
		t.Errorf("--check-modules printed\n%s\nthe doc says\n%s", got, example)
	}
	bad := filepath.Join(t.TempDir(), "bad.yml")
	if err := os.WriteFile(bad, []byte("modules:\n  m:\n    prober: tcp\n    tcp:\n      colour: red\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(probedBin, "--check-modules", bad).CombinedOutput()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 1 || !strings.Contains(string(out), "module m, line 5: unknown key \"colour\"") {
		t.Errorf("--check-modules of a bad file: %v\n%s", err, out)
	}
}

func mustAbs(t *testing.T, path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}
