package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestLimitsTable checks docs/deploying.md's table of limits against probed --help:
// every flag it names exists, with the default it gives.
func TestLimitsTable(t *testing.T) {
	readme, err := os.ReadFile("../../docs/deploying.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "<!-- limits: checked by cmd/probed/limits_table_test.go -->\n")
	table, _, ok2 := strings.Cut(table, "<!-- end of limits -->")
	if !ok || !ok2 {
		t.Fatal("docs/deploying.md has no limits table between its markers")
	}
	help, err := exec.Command(probedBin, "--help").Output()
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	flag := regexp.MustCompile("`(--[a-z-]+)`")
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.Contains(cells[1], "`--") {
			continue
		}
		rows++
		flags := flag.FindAllStringSubmatch(cells[1], -1)
		defaults := strings.Split(strings.TrimSpace(cells[2]), " / ")
		if len(flags) != len(defaults) {
			t.Errorf("row %q: %d flags, %d defaults", line, len(flags), len(defaults))
			continue
		}
		for i, f := range flags {
			if want := f[1] + "=" + defaults[i]; !strings.Contains(string(help), want+" ") && !strings.Contains(string(help), want+"\n") {
				t.Errorf("docs/deploying.md says %s; probed --help does not", want)
			}
		}
	}
	if rows < 10 {
		t.Errorf("%d rows in the limits table, want every limit", rows)
	}
}

// TestFlagsTable checks that docs/deploying.md's table of flags has every
// flag probed --help lists.
func TestFlagsTable(t *testing.T) {
	doc, err := os.ReadFile("../../docs/deploying.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(doc), "## Flags\n")
	table, _, _ = strings.Cut(table, "\n## ")
	help, err := exec.Command(probedBin, "--help").Output()
	if err != nil {
		t.Fatal(err)
	}
	flags := regexp.MustCompile(`(?m)^\s+(?:-\w, )?(--[a-z-]+)`).FindAllStringSubmatch(string(help), -1)
	if len(flags) < 20 {
		t.Fatalf("probed --help lists %d flags:\n%s", len(flags), help)
	}
	for _, f := range flags {
		if f[1] != "--help" && f[1] != "--version" && !strings.Contains(table, "`"+f[1]+"`") {
			t.Errorf("docs/deploying.md's table of flags does not have %s", f[1])
		}
	}
}
